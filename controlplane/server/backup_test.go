package server_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestBackupRestore: a running server with a device that has release 1
// staged is backed up; the server is replaced by one restored from the
// archive into a fresh folder (same addresses). The device reconnects with
// its credentials, the restored server knows it and what it runs, and the
// device stages nothing again: no chunk fetched, its staging untouched.
func TestBackupRestore(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	api, mqtt := freeAddr(t), freeAddr(t)
	start := func(dir string) *server.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := server.New(ctx, server.Config{DataDir: dir, Listen: api, MQTTListen: mqtt, Version: "test",
			WaveDelay: 300 * time.Millisecond, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	srv := start(dir)
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	dev := startAgent(t, op, "dev-1")
	op.run("devices", "label", "dev-1", "site=north")
	op.run("devices", "assign", "dev-1", "digits", "1")
	eventually(t, "release 1 staged", func() bool { return dev.staged(t)["digits"].Release == 1 })
	staged := dev.staged(t)["digits"]
	chunks := dev.chunks(t)
	rev := dev.a.Status().DesiredRevision

	var archive bytes.Buffer
	m, err := backup.Create(context.Background(), &archive, dir, backup.Options{Version: "test", SnapshotDB: srv.Store().BackupTo})
	if err != nil {
		t.Fatal(err)
	}
	if m.Database != "sqlite" {
		t.Fatalf("backup database %q", m.Database)
	}
	srv.Close()
	eventually(t, "agent sees the server gone", func() bool { return dev.a.Status().State != agent.StateConnected })

	dir2 := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(bytes.NewReader(archive.Bytes()), dir2, backup.Limits{}); err != nil {
		t.Fatal(err)
	}
	srv2 := start(dir2)
	if srv2.AdminToken() != "" {
		t.Fatal("the restored server made a new admin token: its tokens were not restored")
	}
	op2 := operator{t: t, srv: srv2, token: op.token, keys: keys, dir: dir2}
	out := op2.run("devices", "show", "dev-1")
	if !strings.Contains(out, "site=north") && !strings.Contains(out, `"site": "north"`) {
		t.Fatalf("device on the restored server:\n%s", out)
	}
	if got := srv2.AssignedRelease("dev-1", "digits"); got != 1 {
		t.Fatalf("restored assignment of digits to dev-1: release %d, want 1", got)
	}
	deadline := time.Now().Add(60 * time.Second)
	for dev.a.Status().State != agent.StateConnected {
		if time.Now().After(deadline) {
			t.Fatal("the device did not reconnect to the restored server within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, "restored server has the device's report", func() bool {
		ms := srv2.ReportedModels("dev-1")
		return len(ms) == 1 && ms[0].GetStagedRelease() == 1 && ms[0].GetStagedDigest() == staged.Digest
	})
	eventually(t, "desired state received again", func() bool { return dev.a.Status().DesiredRevision > rev })
	if got := dev.staged(t)["digits"]; got != staged {
		t.Fatalf("staging after the restore %+v, was %+v", got, staged)
	}
	if n := dev.chunksAddedSince(t, chunks); n != 0 {
		t.Fatalf("%d chunks fetched after the restore", n)
	}
}
