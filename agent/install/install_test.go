package install_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/trust"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// one asserts a single outcome for the digits model at release rel.
func one(t *testing.T, outs []install.Outcome, err error, rel uint64) install.Outcome {
	t.Helper()
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(outs) != 1 || outs[0].Model != model || outs[0].Release != rel {
		t.Fatalf("outcomes %+v, want one for %s release %d", outs, model, rel)
	}
	return outs[0]
}

func stagedJSON(t *testing.T, dir string) map[string]install.Staged {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "staged.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]install.Staged
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func lastError(in *install.Installer) string {
	for _, ms := range in.Models() {
		if ms.GetName() == model {
			return ms.GetLastError()
		}
	}
	return ""
}

type slots struct{ active string }

func (s slots) ActiveSlot(string) string { return s.active }

type stager struct {
	mu    sync.Mutex
	got   []install.Staged
	names []string
	err   error
}

func (s *stager) OnStaged(_ context.Context, st install.Staged, m *pb.BundleManifest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, st)
	s.names = append(s.names, m.GetName())
	return s.err
}

// TestApplyStagesIntoInactiveSlot: release 1 is fetched, unpacked into
// slot a and handed to the Stager; with slot a active, release 2 goes
// into slot b, fetching only the chunks release 1 lacked; the progress
// topic saw every state; the same metadata again stages nothing.
// (Progress is QoS 0 and the control client handles messages
// concurrently, so states are checked for presence, not order.)
func TestApplyStagesIntoInactiveSlot(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	st := &stager{}
	sl := &slots{}
	in := f.open(func(c *install.Config) { c.Stager, c.Slots = st, sl })
	c := f.connect()
	ctx := context.Background()

	outs, err := f.apply(ctx, in, c.link(), f.assign(b1))
	o := one(t, outs, err, 1)
	if o.Err != nil || o.Staged == nil || o.Staged.Slot != "a" || o.Staged.Digest != b1.digest {
		t.Fatalf("outcome %+v", o)
	}
	sameFiles(t, b1, filepath.Join(f.dir, "models", model, "a"))
	if got := stagedJSON(t, f.dir)[model]; got.Release != 1 || got.Slot != "a" || got.Digest != b1.digest || got.Target != b1.path {
		t.Fatalf("staged.json: %+v", got)
	}
	if raw, err := os.ReadFile(filepath.Join(f.dir, "models", model, "a.manifest")); err != nil || string(raw) != string(b1.raw) {
		t.Fatalf("a.manifest is not the signed manifest (%v)", err)
	}
	if len(st.got) != 1 || st.got[0] != *o.Staged || st.names[0] != model {
		t.Fatalf("stager told %+v", st.got)
	}
	if ms := in.Models(); len(ms) != 1 || ms[0].GetStagedRelease() != 1 || ms[0].GetStagedSlot() != "a" || ms[0].GetLastError() != "" {
		t.Fatalf("models: %v", ms)
	}
	waitFor(t, "progress up to staged", func() bool { return slices.Contains(f.states(b1.digest), "staged") })
	for _, s := range []string{"verifying", "fetching", "unpacking"} {
		if !slices.Contains(f.states(b1.digest), s) {
			t.Errorf("progress states %v lack %s", f.states(b1.digest), s)
		}
	}

	// Nothing new: nothing staged, nothing fetched.
	outs, err = f.apply(ctx, in, c.link(), f.assign(b1))
	if err != nil || len(outs) != 0 {
		t.Fatalf("same release again: %+v, %v", outs, err)
	}

	// Release 2 changes labels.txt; slot a is now active.
	sl.active = "a"
	b2 := f.release(f.build(2, func(d string) { writeFile(t, filepath.Join(d, "labels.txt"), "0 1 2 3 4 5 6 7 8 9\n") }), 2)
	if n := len(in.Chunks().Missing(b2.m)); n != 1 {
		t.Fatalf("release 2 lacks %d chunks before its fetch, want 1 (labels.txt)", n)
	}
	outs, err = f.apply(ctx, in, c.link(), f.assign(b2))
	o = one(t, outs, err, 2)
	if o.Err != nil || o.Staged.Slot != "b" {
		t.Fatalf("release 2: %+v", o)
	}
	sameFiles(t, b2, filepath.Join(f.dir, "models", model, "b"))
	sameFiles(t, b1, filepath.Join(f.dir, "models", model, "a")) // the active slot untouched
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestNoReleaseRoot: a device enrolled before any release push has no
// release root and refuses with ErrNoReleaseRoot.
func TestNoReleaseRoot(t *testing.T) {
	in, err := install.Open(context.Background(), install.Config{Dir: t.TempDir(), DeviceID: device})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := in.Apply(context.Background(), nil, map[string][]byte{"root.json": []byte("{}")}, map[string][]byte{"root.json": []byte("{}")}); !errors.Is(err, install.ErrNoReleaseRoot) {
		t.Fatalf("got %v, want ErrNoReleaseRoot", err)
	}
}

// TestOpenRefusesDamagedStagedFile: a staged.json that is not JSON is an
// error at Open, not an empty record.
func TestOpenRefusesDamagedStagedFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "staged.json"), `{"digits":`)
	if in, err := install.Open(context.Background(), install.Config{Dir: dir, DeviceID: device}); err == nil || !strings.Contains(err.Error(), "staged.json") {
		if in != nil {
			in.Close()
		}
		t.Fatalf("got %v", err)
	}
}

// TestManifestWaitTimesOut: the target verifies but its manifest never
// arrives on the retained topic: ErrManifestTimeout, reported, nothing
// written; once the manifest is published the next Apply stages it.
func TestManifestWaitTimesOut(t *testing.T) {
	f := newFixture(t)
	b1 := f.build(1, nil)
	f.releaseOnly(b1, 1) // released, but the manifest is not published
	in := f.open(func(c *install.Config) { c.ManifestTimeout = 300 * time.Millisecond })
	c := f.connect()
	before := snapshot(t, f.dir)
	outs, err := f.apply(context.Background(), in, c.link(), f.assign(b1))
	o := one(t, outs, err, 1)
	if !errors.Is(o.Err, install.ErrManifestTimeout) || o.Staged != nil {
		t.Fatalf("got %+v, want ErrManifestTimeout", o)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
	if e := lastError(in); !strings.Contains(e, "manifest did not arrive") {
		t.Fatalf("reported error %q", e)
	}
	waitFor(t, "failed progress", func() bool { return slices.Contains(f.states(b1.digest), "failed") })

	f.publishManifest(b1.digest, b1.raw)
	outs, err = f.apply(context.Background(), in, c.link(), f.assign(b1))
	if o := one(t, outs, err, 1); o.Err != nil || o.Staged == nil {
		t.Fatalf("after the manifest arrived: %+v", o)
	}
	if lastError(in) != "" {
		t.Fatalf("error still reported after staging: %q", lastError(in))
	}
}

// TestManifestMismatch: with release 1 staged, (a) the manifest topic of
// release 2 carries other bytes than the signed target, (b) a manifest
// released under counter 3 says release 1 inside. Both are refused with
// their sentinel, nothing fetched, staged state and slots untouched.
func TestManifestMismatch(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(nil)
	c := f.connect()
	ctx := context.Background()
	staged(t, f, in, c, b1)
	before, chunks := snapshot(t, f.dir), c.chunks.Load()

	b2 := f.build(2, func(d string) { writeFile(t, filepath.Join(d, "labels.txt"), "other\n") })
	f.releaseOnly(b2, 2)
	f.publishManifest(b2.digest, b1.raw) // a mirror serving the wrong bytes
	outs, err := f.apply(ctx, in, c.link(), f.assign(b2))
	if o := one(t, outs, err, 2); !errors.Is(o.Err, trust.ErrTargetMismatch) {
		t.Fatalf("wrong manifest bytes: %+v, want ErrTargetMismatch", o)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))

	// The release repository signs b1's bytes as counter 3.
	b3 := &bundleOf{src: b1.src, raw: b1.raw, digest: b1.digest, m: b1.m}
	f.releaseOnly(b3, 3)
	outs, err = f.apply(ctx, in, c.link(), f.assign(b3))
	if o := one(t, outs, err, 3); !errors.Is(o.Err, install.ErrManifestMismatch) || !strings.Contains(o.Err.Error(), "release 1") {
		t.Fatalf("counter disagreeing with the manifest: %+v, want ErrManifestMismatch", o)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
	if c.chunks.Load() != chunks {
		t.Errorf("refused bundles fetched %d chunks", c.chunks.Load()-chunks)
	}
	if got := stagedJSON(t, f.dir)[model]; got.Release != 1 {
		t.Fatalf("staged %+v, want release 1", got)
	}
}

// staged applies bo's assignment and asserts it staged.
func staged(t *testing.T, f *fixture, in *install.Installer, c *conn, bo *bundleOf) {
	t.Helper()
	outs, err := f.apply(context.Background(), in, c.link(), f.assign(bo))
	if o := one(t, outs, err, bo.counter); o.Err != nil || o.Staged == nil {
		t.Fatalf("release %d not staged: %+v", bo.counter, o)
	}
}

// TestFetchCutThenResumedAfterRestart: the connection is cut after five
// chunks; Apply ends with ErrIncomplete, nothing staged, the chunks kept.
// The installer is closed and opened again (an agent restart) on a new
// connection: it stages the bundle, having received again at most one
// chunk.
func TestFetchCutThenResumedAfterRestart(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(nil)
	c := f.connect()
	c.onChunk = func(n int64) {
		if n == 5 {
			c.cut()
		}
	}
	before := snapshot(t, f.dir)
	outs, err := f.apply(context.Background(), in, c.link(), f.assign(b1))
	o := one(t, outs, err, 1)
	if !errors.Is(o.Err, fetch.ErrIncomplete) || o.Staged != nil {
		t.Fatalf("cut fetch: %+v, want ErrIncomplete", o)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
	total := totalChunks(b1.m)
	missing := len(in.Chunks().Missing(b1.m))
	if missing == 0 || missing == total {
		t.Fatalf("after the cut %d of %d chunks missing: want some, not all", missing, total)
	}
	first := c.chunks.Load()
	t.Logf("cut: %v (%d chunks received, %d missing)", o.Err, first, missing)
	in.Close()

	in = f.open(nil)
	c2 := f.connect()
	outs, err = f.apply(context.Background(), in, c2.link(), f.assign(b1))
	if o := one(t, outs, err, 1); o.Err != nil || o.Staged == nil {
		t.Fatalf("resumed: %+v", o)
	}
	sameFiles(t, b1, filepath.Join(f.dir, "models", model, "a"))
	if again := first + c2.chunks.Load() - int64(total); again > 1 {
		t.Errorf("received %d+%d chunks for %d: %d again, want at most 1 per cut", first, c2.chunks.Load(), total, again)
	}
}

// TestUnpackRefusal: the device's size limit is below the bundle: the
// unpack refusal is reported, no slot is written and the release counter
// is not raised, so the same release stages once the limit allows it.
func TestUnpackRefusal(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(func(c *install.Config) { c.Limits = unpack.Limits{MaxTotalSize: 1 << 10} })
	c := f.connect()
	before := snapshot(t, f.dir)
	outs, err := f.apply(context.Background(), in, c.link(), f.assign(b1))
	o := one(t, outs, err, 1)
	if !errors.Is(o.Err, unpack.ErrTooLarge) || o.Staged != nil {
		t.Fatalf("got %+v, want unpack.ErrTooLarge", o)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
	if !strings.Contains(lastError(in), "size limits") {
		t.Fatalf("reported %q", lastError(in))
	}
	if n := len(in.Chunks().Missing(b1.m)); n != 0 {
		t.Fatalf("%d chunks missing: a refused unpack keeps what was fetched", n)
	}
	in.Close()

	in = f.open(nil)
	fetched := c.chunks.Load()
	outs, err = f.apply(context.Background(), in, c.link(), f.assign(b1))
	if o := one(t, outs, err, 1); o.Err != nil {
		t.Fatalf("within limits: %+v", o)
	}
	if c.chunks.Load() != fetched {
		t.Errorf("fetched %d chunks again", c.chunks.Load()-fetched)
	}
}

// TestStagerErrorKeepsBundleStaged: activation fails; the bundle stays
// staged (and recorded, so it is not fetched again), the error is
// returned and reported.
func TestStagerErrorKeepsBundleStaged(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	st := &stager{err: errors.New("golden check failed")}
	in := f.open(func(c *install.Config) { c.Stager = st })
	c := f.connect()
	outs, err := f.apply(context.Background(), in, c.link(), f.assign(b1))
	o := one(t, outs, err, 1)
	if o.Err == nil || !errors.Is(o.Err, st.err) || o.Staged == nil || o.Staged.Slot != "a" {
		t.Fatalf("got %+v, want the stager's error with the bundle staged", o)
	}
	if got := stagedJSON(t, f.dir)[model]; got.Release != 1 {
		t.Fatalf("staged.json %+v", got)
	}
	if ms := in.Models(); len(ms) != 1 || ms[0].GetStagedRelease() != 1 || !strings.Contains(ms[0].GetLastError(), "golden check failed") {
		t.Fatalf("models %v", ms)
	}
	outs, err = f.apply(context.Background(), in, c.link(), f.assign(b1))
	if err != nil || len(outs) != 0 || len(st.got) != 1 {
		t.Fatalf("again: %+v, %v (stager called %d times)", outs, err, len(st.got))
	}
}

// TestNewerDesiredStateSupersedes: release 2's download cannot progress
// (the control plane stops serving it); the caller cancels it when a
// desired state naming release 3 arrives, and release 3 stages. A newer
// director assignment back to release 2 is then refused as a lower
// release counter, and an old director metadata as a rollback; release 3
// stays staged.
func TestNewerDesiredStateSupersedes(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(nil)
	c := f.connect()
	ctx := context.Background()
	staged(t, f, in, c, b1)
	b2 := f.build(2, func(d string) { writeFile(t, filepath.Join(d, "labels.txt"), "two\n") })
	f.refuse.Store(b2.digest, true)
	f.release(b2, 2)
	dm2 := f.assign(b2)
	actx, cancel := context.WithCancel(ctx)
	type result struct {
		outs []install.Outcome
		err  error
	}
	done := make(chan result, 1)
	go func() {
		outs, err := f.apply(actx, in, c.link(), dm2)
		done <- result{outs, err}
	}()
	waitFor(t, "release 2 fetching", func() bool { return slices.Contains(f.states(b2.digest), "fetching") })
	b3 := f.release(f.build(3, func(d string) { writeFile(t, filepath.Join(d, "labels.txt"), "three\n") }), 3)
	dm3 := f.assign(b3)
	cancel() // superseded
	r := <-done
	o := one(t, r.outs, r.err, 2)
	if !errors.Is(o.Err, fetch.ErrIncomplete) || o.Staged != nil {
		t.Fatalf("superseded: %+v", o)
	}
	if got := stagedJSON(t, f.dir)[model]; got.Release != 1 {
		t.Fatalf("staged %+v after a cancelled download", got)
	}
	outs, err := f.apply(ctx, in, c.link(), dm3)
	if o := one(t, outs, err, 3); o.Err != nil || o.Staged == nil || o.Staged.Digest != b3.digest {
		t.Fatalf("release 3: %+v", o)
	}
	sameFiles(t, b3, filepath.Join(f.dir, "models", model, "a"))
	before := snapshot(t, f.dir)

	f.refuse.Delete(b2.digest)
	if _, err := f.apply(ctx, in, c.link(), f.assign(b2)); !errors.Is(err, trust.ErrRollback) || !strings.Contains(err.Error(), "release counter lower") {
		t.Fatalf("assignment back to release 2: %v, want ErrRollback", err)
	}
	if _, err := f.apply(ctx, in, c.link(), dm2); !errors.Is(err, trust.ErrMetadataRollback) {
		t.Fatalf("replayed older director metadata: %v, want ErrMetadataRollback", err)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
}

// TestCrashBeforeCounterFloor: staged.json is written before the
// release counter floor is raised; a crash in between (simulated by
// lowering the floor in the trust state) leaves release 1 staged, and the
// next Apply raises the floor without staging it again.
func TestCrashBeforeCounterFloor(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(nil)
	ctx := context.Background()
	if o := f.applyOne(ctx, in, f.connect(), b1); o.Err != nil || o.Staged == nil {
		t.Fatalf("staging: %+v", o)
	}
	in.Close()
	counter := func() uint64 {
		var st struct {
			Counters map[string]uint64 `json:"counters"`
		}
		b, err := os.ReadFile(filepath.Join(f.dir, "trust", "trust.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		return st.Counters[model]
	}
	if counter() != 1 {
		t.Fatalf("counter floor %d after staging, want 1", counter())
	}
	// The crash: the floor as it was before the staging.
	p := filepath.Join(f.dir, "trust", "trust.json")
	var raw map[string]json.RawMessage
	b, _ := os.ReadFile(p)
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	raw["counters"] = json.RawMessage(`{}`)
	b, _ = json.Marshal(raw)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}

	in = f.open(nil)
	before := snapshot(t, f.dir)
	c := f.connect()
	outs, err := f.apply(ctx, in, c.link(), f.assign(b1))
	if err != nil || len(outs) != 0 {
		t.Fatalf("apply after the crash: %+v, %v; want nothing staged again", outs, err)
	}
	if n := c.chunks.Load(); n != 0 {
		t.Fatalf("%d chunks fetched again", n)
	}
	sameSnapshot(t, before, snapshot(t, f.dir))
	if counter() != 1 {
		t.Fatalf("counter floor %d after the repair, want 1", counter())
	}
	if st := in.Staged()[model]; st.Release != 1 {
		t.Fatalf("staged after the repair: %+v", st)
	}
}
