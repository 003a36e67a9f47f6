package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestAssignmentsFileImported: the release/assignments.json of an earlier
// version is imported into the database at start, once, and renamed;
// a bad file stops the start and is left as it was.
func TestAssignmentsFileImported(t *testing.T) {
	dir := t.TempDir()
	startServer(t, dir).Close()
	file := filepath.Join(dir, "release", "assignments.json")
	old := `{"dev-7":{"digits":{"model":"digits","release":3,"target":"digits/3","digest":"` +
		"ab12000000000000000000000000000000000000000000000000000000000000" + `","revision":9,"signed_at":"2026-11-01T10:00:00Z"}}}`
	if err := os.WriteFile(file, []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, dir)
	if got := s.AssignedRelease("dev-7", "digits"); got != 3 {
		t.Fatalf("imported assignment: release %d, want 3", got)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the imported file is still there: %v", err)
	}
	if _, err := os.Stat(file + ".imported"); err != nil {
		t.Fatal(err)
	}
	s.Close()

	// A damaged file in a fresh folder: the server refuses to start.
	dir2 := t.TempDir()
	startServer(t, dir2).Close()
	bad := filepath.Join(dir2, "release", "assignments.json")
	os.WriteFile(bad, []byte(`{"dev-7":`), 0o600)
	if _, err := startServerErr(dir2); err == nil {
		t.Fatal("a damaged assignments file was accepted")
	}
	if b, _ := os.ReadFile(bad); string(b) != `{"dev-7":` {
		t.Fatal("the damaged file was changed")
	}
}

// startServerErr starts a server on dir and returns the error New gives.
func startServerErr(dir string) (*server.Server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test"})
	if err == nil {
		s.Close()
	}
	return s, err
}
