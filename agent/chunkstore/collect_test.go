package chunkstore_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// twoVersions builds digits v1 and v2 (v2 changes only labels.txt, so the
// two share model.onnx's seven chunks).
func twoVersions(t *testing.T) (*bundle.Store, *pb.BundleManifest, *pb.BundleManifest) {
	t.Helper()
	src, err := bundle.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1 := digits(t, src, nil)
	v2 := digits(t, src, func(dir string) {
		os.WriteFile(filepath.Join(dir, "labels.txt"), []byte("zero\none\ntwo\nthree\nfour\nfive\nsix\nseven\neight\nnine\n"), 0o644)
		b, _ := os.ReadFile(filepath.Join(dir, "bundle.toml"))
		os.WriteFile(filepath.Join(dir, "bundle.toml"), bytes.Replace(b, []byte("release = 1"), []byte("release = 2"), 1), 0o644)
	})
	return src, v1, v2
}

// size is the bytes of m's distinct chunks.
func size(ms ...*pb.BundleManifest) (n int64, count int) {
	seen := map[[32]byte]bool{}
	for _, m := range ms {
		for _, r := range chunkstore.Refs(m) {
			if !seen[r.SHA256] {
				seen[r.SHA256] = true
				n += int64(r.Length)
			}
		}
	}
	return n, len(seen)
}

// files lists the chunk files on disk.
func files(t *testing.T, s *chunkstore.Store) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(s.Dir(), "chunks", "*", "*"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func chunkPath(s *chunkstore.Store, sum [32]byte) string {
	return filepath.Join(s.Dir(), "chunks", hex.EncodeToString(sum[:1]), hex.EncodeToString(sum[:]))
}

// labelsRef is the chunk of labels.txt in m (the one v1 and v2 differ in).
func labelsRef(t *testing.T, m *pb.BundleManifest) chunkstore.ChunkRef {
	t.Helper()
	for _, r := range chunkstore.Refs(m) {
		if m.GetFiles()[r.FileIndex].GetPath() == "labels.txt" {
			return r
		}
	}
	t.Fatal("no labels.txt chunk")
	return chunkstore.ChunkRef{}
}

func TestCollectKeepsLiveRemovesOthers(t *testing.T) {
	src, v1, v2 := twoVersions(t)
	s := open(t, t.TempDir())
	fetch(t, s, src, v1)
	fetch(t, s, src, v2)
	total, count := size(v1, v2)
	if used, n := s.Usage(); used != total || n != count || len(files(t, s)) != count {
		t.Fatalf("usage %d bytes, %d chunks, %d files; want %d, %d", used, n, len(files(t, s)), total, count)
	}
	if n, freed, err := s.Collect(ctx, []*pb.BundleManifest{v1, v2}); err != nil || n != 0 || freed != 0 {
		t.Fatalf("Collect(v1, v2) = %d, %d, %v; want nothing removed", n, freed, err)
	}
	// v2 goes: only its labels chunk is freed, the shared ones stay.
	l2 := labelsRef(t, v2)
	if n, freed, err := s.Collect(ctx, []*pb.BundleManifest{v1}); err != nil || n != 1 || freed != int64(l2.Length) {
		t.Fatalf("Collect(v1) = %d, %d, %v; want 1, %d", n, freed, err, l2.Length)
	}
	if s.Have(l2.SHA256) || len(s.Missing(v1)) != 0 {
		t.Fatal("Collect(v1) kept v2's own chunk or lost one of v1's")
	}
	if _, err := os.Stat(chunkPath(s, l2.SHA256)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("collected chunk's file: %v", err)
	}
	// Nothing live: everything goes.
	v1size, v1count := size(v1)
	if n, freed, err := s.Collect(ctx, nil); err != nil || n != v1count || freed != v1size {
		t.Fatalf("Collect(nil) = %d, %d, %v; want %d, %d", n, freed, err, v1count, v1size)
	}
	if used, n := s.Usage(); used != 0 || n != 0 || len(files(t, s)) != 0 {
		t.Fatalf("after collecting all: %d bytes, %d chunks, files %v", used, n, files(t, s))
	}
}

// TestCollectSparesHeld: a download in progress (Hold) keeps its chunks
// through a collection that names no live manifest.
func TestCollectSparesHeld(t *testing.T) {
	src, v1, _ := twoVersions(t)
	s := open(t, t.TempDir())
	release := s.Hold(v1)
	half := s.Missing(v1)[:3]
	for _, r := range half {
		data, _ := src.Chunk(r.SHA256)
		if err := s.Put(ctx, r, data); err != nil {
			t.Fatal(err)
		}
	}
	if n, _, err := s.Collect(ctx, nil); err != nil || n != 0 {
		t.Fatalf("Collect during a held download = %d, %v; want 0", n, err)
	}
	release()
	release() // a second release does nothing
	if n, _, err := s.Collect(ctx, nil); err != nil || n != len(half) {
		t.Fatalf("Collect after release = %d, %v; want %d", n, err, len(half))
	}
}

// TestQuota: a Put over quota collects first (with Options.Live); if it
// still does not fit it is refused with ErrQuota and the store is as it
// was, on disk and in the index.
func TestQuota(t *testing.T) {
	src, v1, v2 := twoVersions(t)
	v1size, v1count := size(v1)
	v2size, v2count := size(v2)
	// The quota holds either version but not v1 plus v2's labels chunk.
	quota := v2size
	live := []*pb.BundleManifest{v1}
	dir := t.TempDir()
	s, err := chunkstore.OpenOptions(ctx, dir, chunkstore.Options{QuotaBytes: quota,
		Live: func() ([]*pb.BundleManifest, error) { return live, nil }})
	if err != nil {
		t.Fatal(err)
	}
	fetch(t, s, src, v1)
	l2 := labelsRef(t, v2)
	data, _ := src.Chunk(l2.SHA256)
	if err := s.Put(ctx, l2, data); !errors.Is(err, chunkstore.ErrQuota) {
		t.Fatalf("Put over quota with v1 live: %v, want ErrQuota", err)
	}
	if used, n := s.Usage(); used != v1size || n != v1count || len(files(t, s)) != v1count || s.Have(l2.SHA256) {
		t.Fatalf("refused Put changed the store: %d bytes, %d chunks, %d files", used, n, len(files(t, s)))
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("refused Put left temporary files: %v", left)
	}
	s.Close()
	s, err = chunkstore.OpenOptions(ctx, dir, chunkstore.Options{QuotaBytes: quota,
		Live: func() ([]*pb.BundleManifest, error) { return live, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if miss := s.Missing(v2); len(miss) != 1 || len(s.Missing(v1)) != 0 {
		t.Fatalf("after reopening, missing of v2 %d, want 1; of v1 %d, want 0", len(miss), len(s.Missing(v1)))
	}
	// v2 supersedes v1: the Put collects v1's labels chunk and fits.
	live = []*pb.BundleManifest{v2}
	if err := s.Put(ctx, l2, data); err != nil {
		t.Fatalf("Put after v1 is no longer live: %v", err)
	}
	l1 := labelsRef(t, v1)
	if used, n := s.Usage(); used != v2size || n != v2count || s.Have(l1.SHA256) || !s.Have(l2.SHA256) {
		t.Fatalf("after the collecting Put: %d bytes, %d chunks; want %d, %d, v1's labels gone", used, n, v2size, v2count)
	}
}

func TestQuotaWithoutLiveSetCollectsNothing(t *testing.T) {
	src, v1, v2 := twoVersions(t)
	v1size, _ := size(v1)
	s, err := chunkstore.OpenOptions(ctx, t.TempDir(), chunkstore.Options{QuotaBytes: v1size})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fetch(t, s, src, v1)
	l2 := labelsRef(t, v2)
	data, _ := src.Chunk(l2.SHA256)
	if err := s.Put(ctx, l2, data); !errors.Is(err, chunkstore.ErrQuota) {
		t.Fatalf("Put over quota: %v, want ErrQuota", err)
	}
	if len(s.Missing(v1)) != 0 {
		t.Fatal("a Put over quota with no live set collected chunks")
	}
	if _, err := chunkstore.OpenOptions(ctx, t.TempDir(), chunkstore.Options{QuotaBytes: -1}); err == nil {
		t.Fatal("a negative quota was accepted")
	}
	if q := open(t, t.TempDir()).Quota(); q != chunkstore.DefaultQuota {
		t.Fatalf("default quota %d, want %d", q, chunkstore.DefaultQuota)
	}
}

// TestCrashBetweenIndexDeleteAndFileDelete: a collection stopped after
// its committed index delete, before any file removal, leaves files with
// no row; reopening removes them, and every row still has its file.
func TestCrashBetweenIndexDeleteAndFileDelete(t *testing.T) {
	src, v1, v2 := twoVersions(t)
	dir := t.TempDir()
	s, err := chunkstore.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fetch(t, s, src, v1)
	fetch(t, s, src, v2)
	crash := errors.New("simulated crash")
	chunkstore.SetAfterIndexDelete(s, func() error { return crash })
	if _, _, err := s.Collect(ctx, []*pb.BundleManifest{v2}); !errors.Is(err, crash) {
		t.Fatalf("Collect = %v, want the simulated crash", err)
	}
	l1 := labelsRef(t, v1)
	if _, err := os.Stat(chunkPath(s, l1.SHA256)); err != nil {
		t.Fatalf("the crash should leave the collected chunk's file: %v", err)
	}
	s.Close()

	s = open(t, dir)
	if _, err := os.Stat(chunkPath(s, l1.SHA256)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("orphan file after reopening: %v", err)
	}
	v2size, v2count := size(v2)
	if used, n := s.Usage(); used != v2size || n != v2count || len(files(t, s)) != v2count {
		t.Fatalf("after reopening: %d bytes, %d chunks, %d files; want %d, %d, %d", used, n, len(files(t, s)), v2size, v2count, v2count)
	}
	for _, r := range chunkstore.Refs(v2) {
		if _, err := s.Read(ctx, r.SHA256); err != nil {
			t.Fatalf("a live chunk is unreadable after reopening: %v", err)
		}
	}
	if miss := s.Missing(v1); len(miss) != 1 || miss[0].SHA256 != l1.SHA256 {
		t.Fatalf("v1 missing %+v, want its labels chunk alone", miss)
	}
}

// TestOpenDropsRowsWithoutFiles: a row whose file is gone (or the wrong
// size) is dropped on open, so Missing asks for the chunk again.
func TestOpenDropsRowsWithoutFiles(t *testing.T) {
	src, v1, _ := twoVersions(t)
	dir := t.TempDir()
	s, err := chunkstore.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	fetch(t, s, src, v1)
	refs := chunkstore.Refs(v1)
	os.Remove(chunkPath(s, refs[0].SHA256))
	os.WriteFile(chunkPath(s, refs[1].SHA256), []byte("short"), 0o600)
	s.Close()
	s = open(t, dir)
	miss := s.Missing(v1)
	if len(miss) != 2 || miss[0].SHA256 != refs[0].SHA256 || miss[1].SHA256 != refs[1].SHA256 {
		t.Fatalf("missing %+v, want the two damaged chunks", miss)
	}
	v1size, v1count := size(v1)
	want := v1size - int64(refs[0].Length) - int64(refs[1].Length)
	if used, n := s.Usage(); used != want || n != v1count-2 || len(files(t, s)) != v1count-2 {
		t.Fatalf("usage %d bytes, %d chunks, %d files; want %d, %d", used, n, len(files(t, s)), want, v1count-2)
	}
}
