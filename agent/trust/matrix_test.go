package trust

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Malicious-repository matrix: each case starts from a device that has
// verified release v1 and its director assignment, and asserts the
// specific refusal and that nothing persisted changed.

func verified(t *testing.T) (*fixture, string) {
	f := newFixture(t, release.DefaultExpiry)
	path := release.TargetPath("resnet", 1)
	ts := f.accept(f.repo.Metadata(), f.assign(path))
	if len(ts) != 1 || ts[0].Path != path || ts[0].ReleaseCounter != 1 || ts[0].Model != "resnet" {
		t.Fatalf("targets %+v", ts)
	}
	if err := ts[0].Check(manifestFor("resnet", 1)); err != nil {
		t.Fatal(err)
	}
	return f, path
}

func TestAcceptsAgreedTarget(t *testing.T) {
	f, path := verified(t)
	p2 := f.release("resnet", 2, "rpi4")
	ts := f.accept(f.repo.Metadata(), f.assign(p2))
	if ts[0].Path != p2 || ts[0].ReleaseCounter != 2 || ts[0].DirectorWaived {
		t.Fatalf("targets %+v", ts)
	}
	// The same metadata again is fine (retained messages are re-delivered).
	md := f.repo.Metadata()
	dm := f.assign(path)
	f.accept(md, dm)
	f.accept(md, dm)
}

func TestBadSignature(t *testing.T) {
	f, path := verified(t)
	f.release("resnet", 2, "rpi4")
	md := f.repo.Metadata()
	ts, _ := metadata.Timestamp().FromBytes(md[release.FileTimestamp])
	ts.Signed.Expires = ts.Signed.Expires.Add(time.Hour) // signed part changed, signature kept
	md[release.FileTimestamp], _ = ts.ToBytes(true)
	f.refuse(md, f.assign(path), ErrBadSignature)
}

func TestUnknownKey(t *testing.T) {
	f, path := verified(t)
	evil := keys(t, release.RoleTargets, 2)
	f.refuse(f.resignTargets(nil, evil...), f.assign(path), ErrUnknownKey)
}

func TestBelowThreshold(t *testing.T) {
	f, path := verified(t)
	f.refuse(f.resignTargets(nil, f.tgtKeys[0]), f.assign(path), ErrBelowThreshold)
}

func TestDuplicateKeyIDSignatures(t *testing.T) {
	f, path := verified(t)
	md := f.resignTargets(nil, f.tgtKeys[0])
	tg := map[string]any{}
	if err := json.Unmarshal(md[release.FileTargets], &tg); err != nil {
		t.Fatal(err)
	}
	sigs := tg["signatures"].([]any)
	tg["signatures"] = []any{sigs[0], sigs[0]}
	b, _ := json.Marshal(tg)
	r := *f.repo
	r.Targets = b
	f.refuse(f.chain(&r, nil), f.assign(path), ErrDuplicateSignature)
}

// One public key listed under two key IDs counts once: a root (signed
// properly) with that mistake cannot let one key meet a threshold of two.
func TestDuplicatePublicKeyCountedOnce(t *testing.T) {
	f, path := verified(t)
	old, _ := f.repo.Root()
	root, _ := f.repo.Root()
	root.Signed.Version++
	k := f.tgtKeys[0]
	root.Signed.Keys["alias"] = k.TUF()
	root.Signed.Roles[metadata.TARGETS].KeyIDs = []string{k.ID(), "alias"}
	root.ClearSignatures()
	for _, rk := range f.rootKeys[:2] {
		if _, err := root.Sign(signer(t, rk)); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.VerifyDelegate(metadata.ROOT, root); err != nil {
		t.Fatal(err)
	}
	rb, _ := root.ToBytes(true)
	tg, _ := f.repo.TargetsMeta()
	tg.Signed.Version++
	tg.ClearSignatures()
	sig, err := tg.Sign(signer(t, k))
	if err != nil {
		t.Fatal(err)
	}
	tg.Signatures = append(tg.Signatures, metadata.Signature{KeyID: "alias", Signature: sig.Signature})
	r := *f.repo
	r.Roots = append(append([][]byte{}, r.Roots...), rb)
	r.Targets, _ = tg.ToBytes(true)
	f.refuse(f.chain(&r, nil), f.assign(path), ErrDuplicateSignature)
}

func TestExpired(t *testing.T) {
	short := time.Hour
	for name, exp := range map[string]release.Expiry{
		"timestamp": {Root: 1000 * short, Targets: 1000 * short, Snapshot: 1000 * short, Timestamp: short},
		"snapshot":  {Root: 1000 * short, Targets: 1000 * short, Snapshot: short, Timestamp: 1000 * short},
		"targets":   {Root: 1000 * short, Targets: short, Snapshot: 1000 * short, Timestamp: 1000 * short},
		"root":      {Root: short, Targets: 1000 * short, Snapshot: 1000 * short, Timestamp: 1000 * short},
	} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, exp)
			path := release.TargetPath("resnet", 1)
			md, dm := f.repo.Metadata(), f.assign(path)
			f.accept(md, dm)
			f.now = f.now.Add(2 * short)
			f.refuse(md, dm, ErrExpired)
		})
	}
}

func TestMetadataRollback(t *testing.T) {
	f, path := verified(t)
	old := f.repo.Metadata()
	f.release("resnet", 2, "rpi4")
	f.accept(f.repo.Metadata(), f.assign(path))
	f.refuse(old, f.assign(path), ErrMetadataRollback)
}

func TestReleaseCounterRollback(t *testing.T) {
	f, p1 := verified(t)
	p2 := f.release("resnet", 2, "rpi4")
	ts := f.accept(f.repo.Metadata(), f.assign(p2))
	if err := f.v.RecordInstalled(ts[0]); err != nil {
		t.Fatal(err)
	}
	// Both releases are validly signed; the director asks for the older.
	f.refuse(f.repo.Metadata(), f.assign(p1), ErrRollback)
	if f.v.InstalledCounter("resnet") != 2 {
		t.Fatal("counter not persisted")
	}
}

// Freeze: the attacker withholds new metadata and sets the device clock
// back so the old timestamp looks fresh. The persisted floor defeats it.
func TestFreezeClockSetBack(t *testing.T) {
	f, path := verified(t) // timestamp expires t0+24h
	md, dm := f.repo.Metadata(), f.assign(path)
	f.accept(md, dm)
	f.now = t0.Add(72 * time.Hour) // the device reboots three days later
	f.open()
	if !f.v.TimeFloor().After(t0.Add(24 * time.Hour)) {
		t.Fatalf("floor %v not past the timestamp's expiry", f.v.TimeFloor())
	}
	f.now = t0.Add(time.Hour) // clock set back: the old metadata would look fresh
	f.refuse(md, dm, ErrExpired)
}

// The floor also follows the signed issue time: a device with no working
// clock (1970) refuses a frozen release once a newer director timestamp
// has shown it that time has moved on.
func TestFloorFollowsIssueTime(t *testing.T) {
	hour := time.Hour
	f := newFixture(t, release.Expiry{Root: 1000 * hour, Targets: 1000 * hour, Snapshot: 1000 * hour, Timestamp: hour})
	path := release.TargetPath("resnet", 1)
	frozen := f.repo.Metadata() // issued t0, expires t0+1h
	clock := time.Unix(0, 0)
	f.v.cfg.Now = func() time.Time { return clock }
	f.accept(frozen, f.assign(path))
	if !f.v.TimeFloor().Equal(t0) {
		t.Fatalf("floor %v, want the issue time %v", f.v.TimeFloor(), t0)
	}
	f.now = t0.Add(5 * hour) // the server moves on; the director re-signs
	f.accept(frozen, f.assign(path))
	if !f.v.TimeFloor().Equal(t0.Add(5 * hour)) {
		t.Fatalf("floor %v", f.v.TimeFloor())
	}
	f.refuse(frozen, f.assign(path), ErrExpired)
}

func TestMixAndMatch(t *testing.T) {
	f, path := verified(t)
	old := f.repo.Metadata()
	f.release("resnet", 2, "rpi4")
	md := f.repo.Metadata()
	md[release.FileTargets] = old[release.FileTargets] // new snapshot, old targets
	f.refuse(md, f.assign(path), ErrMixAndMatch)
}

func TestDirectorNamesUnreleased(t *testing.T) {
	f, _ := verified(t)
	evil := []byte("a manifest nobody released")
	sum := sha256.Sum256(evil)
	tf := &metadata.TargetFiles{Path: release.TargetPath("resnet", 9), Length: int64(len(evil)), Hashes: metadata.Hashes{"sha256": sum[:]}}
	f.refuse(f.repo.Metadata(), f.assignRaw(release.Assignment{DeviceID: f.device, Targets: []*metadata.TargetFiles{tf}}), ErrNotReleased)
}

func TestDirectorDisagrees(t *testing.T) {
	for _, name := range []string{"hash", "length"} {
		t.Run(name, func(t *testing.T) {
			f, path := verified(t)
			tf, _ := f.repo.Target(path)
			bad := &metadata.TargetFiles{Path: tf.Path, Length: tf.Length, Hashes: metadata.Hashes{"sha256": bytes.Repeat([]byte{7}, 32)}}
			if name == "length" {
				bad = &metadata.TargetFiles{Path: tf.Path, Length: tf.Length + 1, Hashes: tf.Hashes}
			}
			f.refuse(f.repo.Metadata(), f.assignRaw(release.Assignment{DeviceID: f.device, Targets: []*metadata.TargetFiles{bad}}), ErrDisagree)
		})
	}
}

func TestWrongHardware(t *testing.T) {
	f, path := verified(t)
	tf, _ := f.repo.Target(path)
	f.refuse(f.repo.Metadata(), f.assignRaw(release.Assignment{DeviceID: f.device, HardwareID: "jetson", Targets: []*metadata.TargetFiles{tf}}), ErrWrongHardware)
	p2 := f.release("resnet", 2, "jetson", "x86")
	f.refuse(f.repo.Metadata(), f.assign(p2), ErrWrongHardware)
}

func TestWrongDevice(t *testing.T) {
	f, path := verified(t)
	tf, _ := f.repo.Target(path)
	f.refuse(f.repo.Metadata(), f.assignRaw(release.Assignment{DeviceID: "dev-2", Targets: []*metadata.TargetFiles{tf}}), ErrWrongDevice)
}

func TestOversize(t *testing.T) {
	f, path := verified(t)
	for _, name := range []string{"root.json", "2.root.json", "timestamp.json", "snapshot.json", "targets.json"} {
		for _, repo := range []string{"release", "director"} {
			t.Run(repo+"/"+name, func(t *testing.T) {
				md, dm := f.repo.Metadata(), f.assign(path)
				target := md
				if repo == "director" {
					target = dm
				}
				role, _, _ := roleOf(name)
				b := target[name]
				if b == nil {
					b = target["root.json"]
				}
				target[name] = append(append([]byte{}, b...), bytes.Repeat([]byte(" "), int(DefaultLimits.of(role)))...)
				f.refuse(md, dm, ErrTooLarge)
			})
		}
	}
	md := f.repo.Metadata()
	for i := range DefaultLimits.Files {
		md[release.RootFile(int64(i+10))] = []byte("{}")
	}
	f.refuse(md, f.assign(path), ErrTooLarge)
}

func TestMissingAndMalformed(t *testing.T) {
	f, path := verified(t)
	md := f.repo.Metadata()
	delete(md, release.FileTimestamp)
	f.refuse(md, f.assign(path), ErrMissingMetadata)
	f.refuse(f.repo.Metadata(), nil, ErrMissingMetadata)
	md = f.repo.Metadata()
	md["evil.json"] = []byte("{}")
	f.refuse(md, f.assign(path), ErrMalformed)
	f.release("resnet", 2, "rpi4")
	md = f.repo.Metadata()
	md[release.FileTimestamp] = []byte(`{"signed":`)
	f.refuse(md, f.assign(path), ErrMalformed)
}
