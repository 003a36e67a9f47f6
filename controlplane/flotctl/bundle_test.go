package flotctl_test

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
)

// TestBundleBuild: `flotctl bundle build` needs no server, writes a store
// holding the manifest, and prints the same digest Build gives.
func TestBundleBuild(t *testing.T) {
	src := filepath.Join("..", "bundle", "testdata", "digits")
	_, want, err := bundle.Build(src, bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "store")
	var stdout, stderr bytes.Buffer
	env := flotctl.Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if code := flotctl.Run(context.Background(), []string{"bundle", "build", src, "-o", out}, env); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), want) {
		t.Fatalf("output %q lacks digest %s", stdout.String(), want)
	}
	s, _ := bundle.OpenStore(out)
	if _, m, err := s.Manifest(want); err != nil || m.GetName() != "digits" {
		t.Fatalf("store: %v", err)
	}
	stdout.Reset()
	if code := flotctl.Run(context.Background(), []string{"-json", "bundle", "show", "-store", out, want}, env); code != 0 || !strings.Contains(stdout.String(), `"release": 1`) {
		t.Fatalf("show: exit %d: %s %s", code, stdout.String(), stderr.String())
	}
	if code := flotctl.Run(context.Background(), []string{"bundle", "build"}, env); code != 2 {
		t.Fatalf("build without DIR: exit %d, want 2", code)
	}
}
