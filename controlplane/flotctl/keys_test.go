package flotctl

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

func runOffline(t *testing.T, args ...string) (string, int) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return out.String() + errb.String(), code
}

func TestKeysGenerateReleaseRotate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	if out, code := runOffline(t, "keys", "generate", "-dir", dir, "-threshold", "2", "-count", "3"); code != 0 {
		t.Fatalf("generate: %d %s", code, out)
	}
	if _, code := runOffline(t, "keys", "generate", "-dir", dir); code == 0 {
		t.Fatal("generate over an existing repository")
	}
	pems, _ := filepath.Glob(filepath.Join(dir, "keys", "*.pem"))
	if len(pems) != 6 {
		t.Fatalf("%d offline keys", len(pems))
	}
	for _, p := range pems {
		if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", p, st.Mode())
		}
	}
	manifest := filepath.Join(t.TempDir(), "m.manifest")
	os.WriteFile(manifest, []byte("manifest bytes"), 0o644)
	if out, code := runOffline(t, "release", "add", "-keys", dir, "-model", "resnet", "-counter", "3", "-hardware", "rpi4", manifest); code != 0 {
		t.Fatalf("release add: %d %s", code, out)
	}
	if _, code := runOffline(t, "release", "add", "-keys", dir, "-model", "resnet", "-counter", "2", manifest); code == 0 {
		t.Fatal("lower counter released")
	}
	if out, code := runOffline(t, "keys", "rotate", "-dir", dir); code != 0 {
		t.Fatalf("rotate: %d %s", code, out)
	}
	repo, err := release.OpenDir(filepath.Join(dir, "repo"))
	if err != nil || len(repo.Roots) != 2 {
		t.Fatalf("repo after rotate: %v", err)
	}
	retired, _ := filepath.Glob(filepath.Join(dir, "keys", "retired", "*.pem"))
	if len(retired) != 6 {
		t.Fatalf("%d retired keys", len(retired))
	}
	// The released target survives the rotation, now signed by the new keys.
	if _, err := repo.Target(release.TargetPath("resnet", 3)); err != nil {
		t.Fatal(err)
	}
	if out, code := runOffline(t, "release", "add", "-keys", dir, "-model", "resnet", "-counter", "4", manifest); code != 0 {
		t.Fatalf("release with new keys: %s", out)
	}
	online, _ := release.ReadKeys(filepath.Join(dir, "online"), release.RoleOnline)
	repo, _ = release.OpenDir(filepath.Join(dir, "repo"))
	if _, err := repo.Publish(online[0], time.Now(), release.DefaultExpiry); err != nil {
		t.Fatalf("server publish with the online key: %v", err)
	}
}
