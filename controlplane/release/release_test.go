package release

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func genN(t *testing.T, role string, n int) []*Key {
	var ks []*Key
	for range n {
		k, err := GenerateKey(role)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

func newRepo(t *testing.T) (*Repository, RootKeys) {
	k := RootKeys{Root: genN(t, RoleRoot, 3), Targets: genN(t, RoleTargets, 3), Online: genN(t, RoleOnline, 1)[0], Threshold: 2}
	r, err := Init(k, t0, DefaultExpiry)
	if err != nil {
		t.Fatal(err)
	}
	return r, k
}

func TestKeyFileRoundTripAndMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	k := genN(t, RoleTargets, 1)[0]
	path, err := WriteKey(dir, k)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	got, err := ReadKeys(dir, RoleTargets)
	if err != nil || len(got) != 1 || got[0].ID() != k.ID() {
		t.Fatalf("read back %v %v", got, err)
	}
	if _, err := ParseKey([]byte("not a key")); err == nil {
		t.Fatal("garbage parsed")
	}
}

func TestInitRequiresThresholdKeys(t *testing.T) {
	_, err := Init(RootKeys{Root: genN(t, RoleRoot, 1), Targets: genN(t, RoleTargets, 3), Online: genN(t, RoleOnline, 1)[0], Threshold: 2}, t0, DefaultExpiry)
	if err == nil {
		t.Fatal("1 root key with threshold 2 accepted")
	}
}

func TestAddTargetRules(t *testing.T) {
	r, k := newRepo(t)
	c := ReleaseCustom{Model: "m", ReleaseCounter: 2}
	if _, err := r.AddTarget(TargetPath("m", 2), []byte("v2"), c, k.Targets[:1], t0, DefaultExpiry); err == nil {
		t.Fatal("one targets key met a threshold of two")
	}
	if _, err := r.AddTarget(TargetPath("m", 2), []byte("v2"), c, k.Targets[1:], t0, DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddTarget(TargetPath("m", 2), []byte("other"), c, k.Targets, t0, DefaultExpiry); err == nil {
		t.Fatal("released path overwritten")
	}
	if _, err := r.AddTarget(TargetPath("m", 1), []byte("v1"), ReleaseCustom{Model: "m", ReleaseCounter: 1}, k.Targets, t0, DefaultExpiry); err == nil {
		t.Fatal("lower counter released")
	}
	for _, p := range []string{"/abs", "../x", "a/../b", ""} {
		if _, err := r.AddTarget(p, []byte("x"), ReleaseCustom{Model: "z", ReleaseCounter: 1}, k.Targets, t0, DefaultExpiry); err == nil {
			t.Fatalf("path %q accepted", p)
		}
	}
	tf, err := r.Target(TargetPath("m", 2))
	if err != nil || tf.Length != 2 {
		t.Fatalf("%v %v", tf, err)
	}
}

func TestPublishResignsOnlyWhenNeeded(t *testing.T) {
	r, k := newRepo(t)
	if changed, err := r.Publish(k.Online, t0, DefaultExpiry); err != nil || !changed {
		t.Fatalf("first publish: %v %v", changed, err)
	}
	if changed, _ := r.Publish(k.Online, t0.Add(time.Hour), DefaultExpiry); changed {
		t.Fatal("fresh metadata re-signed")
	}
	if changed, _ := r.Publish(k.Online, t0.Add(13*time.Hour), DefaultExpiry); !changed {
		t.Fatal("timestamp past half its life not re-signed")
	}
	ts, _ := metadata.Timestamp().FromBytes(r.Timestamp)
	if ts.Signed.Version != 2 || ts.Signed.UnrecognizedFields[IssuedField] != t0.Add(13*time.Hour).Format(time.RFC3339) {
		t.Fatalf("timestamp %+v", ts.Signed)
	}
	if _, err := r.Publish(genN(t, RoleOnline, 1)[0], t0.Add(30*time.Hour), DefaultExpiry); err == nil {
		t.Fatal("publish with a key the root does not name")
	}
}

func TestRotateCrossSigns(t *testing.T) {
	r, k := newRepo(t)
	next := RootKeys{Root: genN(t, RoleRoot, 2), Targets: genN(t, RoleTargets, 2), Online: k.Online, Threshold: 2}
	if err := r.Rotate(k.Root[:1], next, t0, DefaultExpiry); err == nil {
		t.Fatal("rotation with one of three old keys (threshold 2)")
	}
	if err := r.Rotate(k.Root[1:], next, t0, DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	v1, _ := metadata.Root().FromBytes(r.Roots[0])
	v2, _ := metadata.Root().FromBytes(r.Roots[1])
	if err := v1.VerifyDelegate(metadata.ROOT, v2); err != nil {
		t.Fatalf("v2 not accepted by v1: %v", err)
	}
	tg, _ := r.TargetsMeta()
	if err := v2.VerifyDelegate(metadata.TARGETS, tg); err != nil || tg.Signed.Version != 2 {
		t.Fatalf("targets not re-signed by the new keys: %v (v%d)", err, tg.Signed.Version)
	}
	dir := t.TempDir()
	if err := r.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	back, err := OpenDir(dir)
	if err != nil || len(back.Roots) != 2 {
		t.Fatalf("reopen: %v", err)
	}
}

func TestDirectorSignAndRotate(t *testing.T) {
	k := genN(t, RoleOnline, 2)
	d, err := NewDirector(k[0], t0, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Sign(Assignment{DeviceID: "d1", Version: 0}, t0); err == nil {
		t.Fatal("version 0 accepted")
	}
	bad := &metadata.TargetFiles{Path: "../x", Length: 1}
	if _, err := d.Sign(Assignment{DeviceID: "d1", Version: 1, Targets: []*metadata.TargetFiles{bad}}, t0); err == nil {
		t.Fatal("bad target accepted")
	}
	if err := d.Rotate(k[1], t0, 365*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	md, err := d.Sign(Assignment{DeviceID: "d1", Version: 1}, t0)
	if err != nil || md["1.root.json"] == nil || md["2.root.json"] == nil || md["timestamp.json"] == nil {
		t.Fatalf("director metadata %v %v", len(md), err)
	}
	if _, err := OpenDirector(k[0], d.Roots()); err == nil {
		t.Fatal("retired key reopened the director")
	}
	if _, err := OpenDirector(k[1], d.Roots()); err != nil {
		t.Fatal(err)
	}
}
