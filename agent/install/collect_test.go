package install_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/install"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// labelsSum is the hash of labels.txt's (only) chunk in m.
func labelsSum(t *testing.T, m *pb.BundleManifest) [32]byte {
	t.Helper()
	for _, r := range chunkstore.Refs(m) {
		if m.GetFiles()[r.FileIndex].GetPath() == "labels.txt" {
			return r.SHA256
		}
	}
	t.Fatal("no labels.txt chunk")
	return [32]byte{}
}

// TestApplyCollectsChunksOfOldSlots: after each staging the installer
// collects the chunks neither the active nor the staged slot names.
// Releases 1..3 differ only in labels.txt; model.onnx's chunks are shared.
func TestApplyCollectsChunksOfOldSlots(t *testing.T) {
	f := newFixture(t)
	sl := &slots{}
	in := f.open(func(c *install.Config) { c.Slots = sl })
	c := f.connect()
	ctx := context.Background()
	labels := func(s string) func(string) {
		return func(d string) { writeFile(t, filepath.Join(d, "labels.txt"), s) }
	}

	b1 := f.release(f.build(1, nil), 1)
	if o := f.applyOne(ctx, in, c, b1); o.Err != nil {
		t.Fatal(o.Err)
	}
	sl.active = "a" // release 1 activated
	b2 := f.release(f.build(2, labels("r2\n")), 2)
	if o := f.applyOne(ctx, in, c, b2); o.Err != nil || o.Staged.Slot != "b" {
		t.Fatalf("release 2: %+v", o)
	}
	// Active a (release 1) and staged b (release 2): both kept.
	if len(in.Chunks().Missing(b1.m)) != 0 || len(in.Chunks().Missing(b2.m)) != 0 {
		t.Fatal("a chunk of the active or the staged release was collected")
	}
	sl.active = "b" // release 2 activated
	b3 := f.release(f.build(3, labels("r3\n")), 3)
	if o := f.applyOne(ctx, in, c, b3); o.Err != nil || o.Staged.Slot != "a" {
		t.Fatalf("release 3: %+v", o)
	}
	// Active b (release 2), staged a (release 3): release 1's own chunk
	// (its labels.txt) went; the shared model chunks stayed.
	miss := in.Chunks().Missing(b1.m)
	if len(miss) != 1 || miss[0].SHA256 != labelsSum(t, b1.m) {
		t.Fatalf("release 1 missing %+v, want its labels.txt chunk alone", miss)
	}
	if len(in.Chunks().Missing(b2.m)) != 0 || len(in.Chunks().Missing(b3.m)) != 0 {
		t.Fatal("a chunk of the active or the staged release was collected")
	}
	if _, n := in.Chunks().Usage(); n != totalChunks(b1.m)+1 {
		t.Fatalf("%d chunks held, want %d (model's, and two labels)", n, totalChunks(b1.m)+1)
	}
}

// TestChunkQuotaRefusesBundle: a bundle larger than the chunk quota is
// refused with ErrQuota and nothing is staged.
func TestChunkQuotaRefusesBundle(t *testing.T) {
	f := newFixture(t)
	in := f.open(func(c *install.Config) { c.ChunkQuota = 8 << 10 })
	c := f.connect()
	b1 := f.release(f.build(1, nil), 1)
	o := f.applyOne(context.Background(), in, c, b1)
	if !errors.Is(o.Err, chunkstore.ErrQuota) || o.Staged != nil {
		t.Fatalf("outcome %+v, want ErrQuota and nothing staged", o)
	}
	if used, _ := in.Chunks().Usage(); used > 8<<10 {
		t.Fatalf("%d bytes held, over the 8 KiB quota", used)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "staged.json")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("staged.json after a refusal: %v", err)
	}
}

// applyOne applies bo's assignment over c and returns its one outcome.
func (f *fixture) applyOne(ctx context.Context, in *install.Installer, c *conn, bo *bundleOf) install.Outcome {
	f.t.Helper()
	outs, err := f.apply(ctx, in, c.link(), f.assign(bo))
	return one(f.t, outs, err, bo.counter)
}

// TestCutDownloadKeepsChunksThroughCollection: a download cut short keeps
// its chunks, across a restart, through a collection that names no slot
// of it (as another model's staging runs), and resumes fetching only
// what it lacked; once staged it is no longer pinned. A cut download the
// desired state no longer names is unpinned, and its chunks go.
func TestCutDownloadKeepsChunksThroughCollection(t *testing.T) {
	f := newFixture(t)
	b1 := f.release(f.build(1, nil), 1)
	in := f.open(nil)
	c := f.connect()
	c.onChunk = func(n int64) {
		if n == 5 {
			c.cut()
		}
	}
	ctx := context.Background()
	if o := f.applyOne(ctx, in, c, b1); !errors.Is(o.Err, fetch.ErrIncomplete) {
		t.Fatalf("cut fetch: %+v, want ErrIncomplete", o)
	}
	first := c.chunks.Load()
	in.Close()

	in = f.open(nil) // a restart
	if pins := in.Chunks().Pins(); pins[model].GetRelease() != 1 {
		t.Fatalf("pins after the restart: %v, want release 1 of %s", pins, model)
	}
	_, held := in.Chunks().Usage()
	if n, _, err := in.Chunks().Collect(ctx, nil); err != nil || n != 0 {
		t.Fatalf("collection with the cut download pinned removed %d chunks (%v), want none of its %d", n, err, held)
	}
	c2 := f.connect()
	if o := f.applyOne(ctx, in, c2, b1); o.Err != nil || o.Staged == nil {
		t.Fatalf("resumed: %+v", o)
	}
	if again := first + c2.chunks.Load() - int64(totalChunks(b1.m)); again > 1 {
		t.Errorf("received %d+%d chunks for %d: %d again, want at most the one cut", first, c2.chunks.Load(), totalChunks(b1.m), again)
	}
	if pins := in.Chunks().Pins(); len(pins) != 0 {
		t.Fatalf("pins after staging: %v", pins)
	}

	// Release 2 adds a file of fresh chunks; its download is cut, then
	// the desired state names release 1 again: the pin goes, and so do
	// release 2's chunks at the next collection.
	b2 := f.release(f.build(2, func(d string) {
		big := make([]byte, 12*pb.MinChunkSize)
		for i := range big {
			big[i] = byte(i * 7 % 251)
		}
		if err := os.WriteFile(filepath.Join(d, "extra.bin"), big, 0o644); err != nil {
			t.Fatal(err)
		}
	}), 2)
	c3 := f.connect()
	c3.onChunk = func(n int64) {
		if n == 4 {
			c3.cut()
		}
	}
	if o := f.applyOne(ctx, in, c3, b2); !errors.Is(o.Err, fetch.ErrIncomplete) {
		t.Fatalf("cut fetch of release 2: %+v, want ErrIncomplete", o)
	}
	if in.Chunks().Pins()[model].GetRelease() != 2 {
		t.Fatalf("pins after the cut of release 2: %v", in.Chunks().Pins())
	}
	c4 := f.connect()
	if outs, err := f.apply(ctx, in, c4.link(), f.assign(b1)); err != nil || len(outs) != 0 {
		t.Fatalf("desired state naming release 1 again: %+v, %v; want nothing to stage", outs, err)
	}
	if pins := in.Chunks().Pins(); len(pins) != 0 {
		t.Fatalf("release 2 still pinned after the desired state dropped it: %v", pins)
	}
	if _, _, err := in.Chunks().Collect(ctx, []*pb.BundleManifest{b1.m}); err != nil {
		t.Fatal(err)
	}
	if _, n := in.Chunks().Usage(); n != totalChunks(b1.m) {
		t.Fatalf("%d chunks held after collecting, want release 1's %d alone", n, totalChunks(b1.m))
	}
}
