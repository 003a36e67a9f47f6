package trust

import (
	"errors"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

func TestKeyRotationEndToEnd(t *testing.T) {
	f, _ := verified(t)
	oldTargets := f.tgtKeys
	newRoot, newTargets := keys(t, release.RoleRoot, 3), keys(t, release.RoleTargets, 3)
	if err := f.repo.Rotate(f.rootKeys[:2], release.RootKeys{Root: newRoot, Targets: newTargets, Online: f.online, Threshold: 2}, f.now, f.exp); err != nil {
		t.Fatal(err)
	}
	f.rootKeys, f.tgtKeys = newRoot, newTargets
	p2 := f.release("resnet", 2, "rpi4") // signed by the new targets keys
	ts := f.accept(f.repo.Metadata(), f.assign(p2))
	if ts[0].Path != p2 {
		t.Fatalf("targets %+v", ts)
	}
	if rv, _ := f.v.RootVersions(); rv != 2 {
		t.Fatalf("release root version %d, want 2", rv)
	}
	// Targets signed by the retired keys are refused now.
	f.refuse(f.resignTargets(nil, oldTargets[:2]...), f.assign(p2), ErrUnknownKey)
	// A root v3 signed only by the retired root keys is refused too.
	stolen := *f.repo
	if err := stolen.Rotate(f.rootKeys[:0], release.RootKeys{Root: keys(t, release.RoleRoot, 2), Targets: oldTargets, Online: f.online, Threshold: 2}, f.now, f.exp); err == nil {
		t.Fatal("rotation without the current root keys succeeded")
	}
	// Reopening keeps the rotated root.
	f.open()
	if rv, _ := f.v.RootVersions(); rv != 2 {
		t.Fatalf("after reopen: release root version %d", rv)
	}
}

func TestSideload(t *testing.T) {
	f, _ := verified(t)
	p2 := f.release("resnet", 2, "rpi4")
	md := f.repo.Metadata()
	before := f.state()
	if _, err := f.v.VerifySideload(md, nil, p2, false); !errors.Is(err, ErrDirectorRequired) {
		t.Fatalf("got %v", err)
	}
	if string(before) != string(f.state()) {
		t.Fatal("refused sideload changed state")
	}
	tg, err := f.v.VerifySideload(md, nil, p2, true)
	if err != nil || !tg.DirectorWaived || tg.ReleaseCounter != 2 {
		t.Fatalf("sideload: %+v %v", tg, err)
	}
	if _, err := f.v.VerifySideload(md, nil, release.TargetPath("resnet", 7), true); !errors.Is(err, ErrNotReleased) {
		t.Fatalf("got %v", err)
	}
	// With director metadata, the director must agree and nothing is waived.
	tg, err = f.v.VerifySideload(md, f.assign(p2), p2, false)
	if err != nil || tg.DirectorWaived {
		t.Fatalf("sideload with director: %+v %v", tg, err)
	}
	// Expired sideload metadata is refused even with authorisation.
	f.now = f.now.Add(48 * time.Hour)
	if _, err := f.v.VerifySideload(md, nil, p2, true); !errors.Is(err, ErrExpired) {
		t.Fatalf("got %v", err)
	}
}

// Expiry gates installs only: the installed slot is re-checked by hash at
// boot with no expiry, even long after every signature has expired.
func TestBootCheckIgnoresExpiry(t *testing.T) {
	f, path := verified(t)
	ts := f.accept(f.repo.Metadata(), f.assign(path))
	if err := f.v.RecordInstalled(ts[0]); err != nil {
		t.Fatal(err)
	}
	f.now = f.now.Add(5 * 365 * 24 * time.Hour)
	f.open()
	got, err := f.v.VerifyInstalled(path, manifestFor("resnet", 1))
	if err != nil || got.ReleaseCounter != 1 {
		t.Fatalf("boot check: %+v %v", got, err)
	}
	if _, err := f.v.VerifyInstalled(path, []byte("tampered")); !errors.Is(err, ErrTargetMismatch) {
		t.Fatalf("got %v", err)
	}
	if _, err := f.v.VerifyInstalled("bundles/other/1.manifest", nil); !errors.Is(err, ErrNotInstalled) {
		t.Fatalf("got %v", err)
	}
	// ...while installing anything with that metadata is refused.
	f.refuse(f.repo.Metadata(), f.assign(path), ErrExpired)
}

func TestCounterReusedWithOtherContent(t *testing.T) {
	f, path := verified(t)
	ts := f.accept(f.repo.Metadata(), f.assign(path))
	forged := ts[0]
	forged.SHA256 = "00" + forged.SHA256[2:]
	forged.Path = "bundles/resnet/1b.manifest"
	if err := f.v.RecordInstalled(forged); err != nil {
		t.Fatal(err)
	}
	f.refuse(f.repo.Metadata(), f.assign(path), ErrRollback)
}

func TestOpenRejectsBadInitialRoot(t *testing.T) {
	f := newFixture(t, release.DefaultExpiry)
	_, err := Open(Config{Dir: t.TempDir(), DeviceID: "d", ReleaseRoot: []byte("{}"), DirectorRoot: f.director.Root()})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
	root, _ := f.repo.Root()
	root.ClearSignatures()
	unsigned, _ := root.ToBytes(false)
	_, err = Open(Config{Dir: t.TempDir(), DeviceID: "d", ReleaseRoot: unsigned, DirectorRoot: f.director.Root()})
	if !errors.Is(err, ErrBelowThreshold) {
		t.Fatalf("got %v", err)
	}
}
