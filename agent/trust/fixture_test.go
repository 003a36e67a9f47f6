package trust

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// The fixture builds real repositories with controlplane/release (the
// server's code) and crafts malicious variants with go-tuf directly.
// Nothing here is faked but the clock.

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type fixture struct {
	t        testing.TB
	now      time.Time
	exp      release.Expiry
	rootKeys []*release.Key
	tgtKeys  []*release.Key
	online   *release.Key
	repo     *release.Repository
	director *release.Director
	dirKey   *release.Key
	dirVer   int64
	dir      string
	v        *Verifier
	device   string
	hw       string
}

func keys(t testing.TB, role string, n int) []*release.Key {
	var ks []*release.Key
	for range n {
		k, err := release.GenerateKey(role)
		if err != nil {
			t.Fatal(err)
		}
		ks = append(ks, k)
	}
	return ks
}

func newFixture(t testing.TB, exp release.Expiry) *fixture {
	f := &fixture{t: t, now: t0, exp: exp, device: "dev-1", hw: "rpi4"}
	f.rootKeys, f.tgtKeys = keys(t, release.RoleRoot, 3), keys(t, release.RoleTargets, 3)
	f.online, f.dirKey = keys(t, release.RoleOnline, 1)[0], keys(t, release.RoleOnline, 1)[0]
	var err error
	f.repo, err = release.Init(release.RootKeys{Root: f.rootKeys, Targets: f.tgtKeys, Online: f.online, Threshold: 2}, f.now, exp)
	if err != nil {
		t.Fatal(err)
	}
	f.director, err = release.NewDirector(f.dirKey, f.now, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f.release("resnet", 1, "rpi4")
	f.dir = t.TempDir()
	f.open()
	return f
}

func (f *fixture) open() {
	v, err := Open(Config{Dir: f.dir, DeviceID: f.device, HardwareID: f.hw,
		ReleaseRoot: f.repo.Roots[0], DirectorRoot: f.director.Roots()[0], Now: func() time.Time { return f.now }})
	if err != nil {
		f.t.Fatal(err)
	}
	f.v = v
}

func manifestFor(model string, counter uint64) []byte {
	return fmt.Appendf(nil, `{"model":%q,"release_counter":%d}`, model, counter)
}

// release adds a manifest target signed by two of three targets keys and
// publishes snapshot and timestamp.
func (f *fixture) release(model string, counter uint64, hw ...string) string {
	f.t.Helper()
	path := release.TargetPath(model, counter)
	if _, err := f.repo.AddTarget(path, manifestFor(model, counter), release.ReleaseCustom{Model: model, ReleaseCounter: counter, HardwareIDs: hw},
		f.tgtKeys[:2], f.now, f.exp); err != nil {
		f.t.Fatal(err)
	}
	f.publish()
	return path
}

func (f *fixture) publish() {
	f.t.Helper()
	if _, err := f.repo.Publish(f.online, f.now, f.exp); err != nil {
		f.t.Fatal(err)
	}
}

// assign signs director metadata naming paths (taken from the release).
func (f *fixture) assign(paths ...string) map[string][]byte {
	f.t.Helper()
	var tfs []*metadata.TargetFiles
	for _, p := range paths {
		tf, err := f.repo.Target(p)
		if err != nil {
			f.t.Fatal(err)
		}
		tfs = append(tfs, tf)
	}
	return f.assignRaw(release.Assignment{DeviceID: f.device, HardwareID: f.hw, Targets: tfs})
}

func (f *fixture) assignRaw(a release.Assignment) map[string][]byte {
	f.t.Helper()
	f.dirVer++
	a.Version = f.dirVer
	md, err := f.director.Sign(a, f.now)
	if err != nil {
		f.t.Fatal(err)
	}
	return md
}

func (f *fixture) state() []byte {
	b, err := os.ReadFile(filepath.Join(f.dir, stateFile))
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

// refuse asserts that verifying is refused with want and that the
// persisted state (and the in-memory one) did not change.
func (f *fixture) refuse(rel, dir map[string][]byte, want error) {
	f.t.Helper()
	before := f.state()
	floor, ctr := f.v.TimeFloor(), f.v.InstalledCounter("resnet")
	ts, err := f.v.VerifyForInstall(rel, dir)
	if !errors.Is(err, want) {
		f.t.Fatalf("got %v (targets %v), want %v", err, ts, want)
	}
	for _, s := range sentinels {
		if s != want && errors.Is(err, s) {
			f.t.Fatalf("error %v also matches %v", err, s)
		}
	}
	if !bytes.Equal(before, f.state()) || floor != f.v.TimeFloor() || ctr != f.v.InstalledCounter("resnet") {
		f.t.Fatalf("refusal changed the persisted state")
	}
	f.t.Logf("refused as expected: %v", err)
}

func (f *fixture) accept(rel, dir map[string][]byte) []Target {
	f.t.Helper()
	ts, err := f.v.VerifyForInstall(rel, dir)
	if err != nil {
		f.t.Fatalf("verify: %v", err)
	}
	return ts
}

var sentinels = []error{ErrMalformed, ErrMissingMetadata, ErrTooLarge, ErrBadSignature, ErrUnknownKey, ErrBelowThreshold,
	ErrDuplicateSignature, ErrExpired, ErrMetadataRollback, ErrMixAndMatch, ErrNotReleased, ErrDisagree, ErrWrongDevice,
	ErrWrongHardware, ErrRollback, ErrDirectorRequired, ErrNotInstalled, ErrTargetMismatch}

func signer(t testing.TB, k *release.Key) signature.Signer {
	s, err := signature.LoadED25519Signer(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// resignTargets re-signs the release targets.json (version+1) with ks
// after mutate, then re-publishes snapshot and timestamp around it with
// the online key, so only targets is at fault.
func (f *fixture) resignTargets(mutate func(*metadata.Metadata[metadata.TargetsType]), ks ...*release.Key) map[string][]byte {
	f.t.Helper()
	tg, err := f.repo.TargetsMeta()
	if err != nil {
		f.t.Fatal(err)
	}
	tg.Signed.Version++
	tg.ClearSignatures()
	if mutate != nil {
		mutate(tg)
	}
	for _, k := range ks {
		if _, err := tg.Sign(signer(f.t, k)); err != nil {
			f.t.Fatal(err)
		}
	}
	b, err := tg.ToBytes(true)
	if err != nil {
		f.t.Fatal(err)
	}
	r := *f.repo
	r.Targets = b
	return f.chain(&r, nil)
}

// chain signs a new snapshot and timestamp for r.Targets with the online
// key, bypassing Publish's own checks, then lets mutate change the files.
func (f *fixture) chain(r *release.Repository, mutate func(map[string][]byte)) map[string][]byte {
	f.t.Helper()
	sn, _ := metadata.Snapshot().FromBytes(f.repo.Snapshot)
	ts, _ := metadata.Timestamp().FromBytes(f.repo.Timestamp)
	tg, err := peek(r.Targets)
	if err != nil {
		f.t.Fatal(err)
	}
	snap := metadata.Snapshot(f.now.Add(f.exp.Snapshot))
	snap.Signed.Version = sn.Signed.Version + 1
	snap.Signed.Meta[release.FileTargets] = metadata.MetaFile(tg.Signed.Version)
	if _, err := snap.Sign(signer(f.t, f.online)); err != nil {
		f.t.Fatal(err)
	}
	r.Snapshot, _ = snap.ToBytes(true)
	tsm := metadata.Timestamp(f.now.Add(f.exp.Timestamp))
	tsm.Signed.Version = ts.Signed.Version + 1
	tsm.Signed.Meta[release.FileSnapshot] = metadata.MetaFile(snap.Signed.Version)
	if _, err := tsm.Sign(signer(f.t, f.online)); err != nil {
		f.t.Fatal(err)
	}
	r.Timestamp, _ = tsm.ToBytes(true)
	md := r.Metadata()
	if mutate != nil {
		mutate(md)
	}
	return md
}
