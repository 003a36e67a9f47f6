package chunkstore_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	// Test-only: the real control-plane builder makes the two real bundle
	// versions; the agent's own code never imports the control plane.
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

var ctx = context.Background()

// digits builds testdata/digits (after change, if any) with 4 KiB chunks
// into src and returns its manifest.
func digits(t *testing.T, src *bundle.Store, change func(dir string)) *pb.BundleManifest {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "..", "controlplane", "bundle", "testdata", "digits"))); err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(dir)
	}
	raw, _, err := bundle.Build(dir, bundle.Options{ChunkSize: pb.MinChunkSize, Chunks: src})
	if err != nil {
		t.Fatal(err)
	}
	m := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func open(t *testing.T, dir string) *chunkstore.Store {
	t.Helper()
	s, err := chunkstore.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fetch puts every missing chunk of m from src and returns how many.
func fetch(t *testing.T, s *chunkstore.Store, src *bundle.Store, m *pb.BundleManifest) int {
	t.Helper()
	miss := s.Missing(m)
	for _, r := range miss {
		data, err := src.Chunk(r.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Put(ctx, r, data); err != nil {
			t.Fatal(err)
		}
	}
	return len(miss)
}

// TestDedupBetweenVersions: v2 of digits changes only labels.txt; with v1
// held, Missing(v2) is exactly labels.txt's chunk.
func TestDedupBetweenVersions(t *testing.T) {
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
	s := open(t, t.TempDir())
	if n := fetch(t, s, src, v1); n != 8 {
		t.Fatalf("v1: fetched %d chunks, want 8 (7 of model.onnx, 1 of labels.txt)", n)
	}
	miss := s.Missing(v2)
	if len(miss) != 1 || v2.GetFiles()[miss[0].FileIndex].GetPath() != "labels.txt" {
		t.Fatalf("v2 missing %+v, want only labels.txt's chunk", miss)
	}
	fetch(t, s, src, v2)
	if len(s.Missing(v2)) != 0 || len(s.Missing(v1)) != 0 {
		t.Fatal("chunks still missing after fetching both")
	}
	// Collecting with only v2 live frees v1's labels chunk alone: the
	// seven model.onnx chunks the two share survive.
	n, freed, err := s.Collect(ctx, []*pb.BundleManifest{v2})
	if err != nil || n != 1 || freed != 20 {
		t.Fatalf("Collect = %d chunks, %d bytes, %v; want 1, 20", n, freed, err)
	}
	if len(s.Missing(v2)) != 0 || len(s.Missing(v1)) != 1 {
		t.Fatal("Collect removed a kept chunk or kept a dead one")
	}
	for _, r := range chunkstore.Refs(v2) {
		if _, err := s.Read(ctx, r.SHA256); err != nil {
			t.Fatalf("a shared chunk did not survive: %v", err)
		}
	}
}

func TestPutRefusesMismatch(t *testing.T) {
	src, _ := bundle.OpenStore(t.TempDir())
	m := digits(t, src, nil)
	s := open(t, t.TempDir())
	r := s.Missing(m)[0]
	data, _ := src.Chunk(r.SHA256)
	bad := bytes.Clone(data)
	bad[0] ^= 1
	for name, d := range map[string][]byte{"flipped bit": bad, "short": data[:len(data)-1], "long": append(bytes.Clone(data), 0), "empty": nil} {
		if err := s.Put(ctx, r, d); !errors.Is(err, chunkstore.ErrMismatch) {
			t.Errorf("%s: err = %v, want ErrMismatch", name, err)
		}
	}
	if s.Have(r.SHA256) {
		t.Fatal("a refused chunk counts as present")
	}
	if files, _ := filepath.Glob(filepath.Join(s.Dir(), "chunks", "*", "*")); len(files) != 0 {
		t.Fatalf("refused chunks left files: %v", files)
	}
}

// TestResumeAfterRestart: half a download, a crash that leaves a temporary
// file and a torn chunk file with no index row; after reopening, Missing
// lists exactly what was not stored, and the torn file is never served.
func TestResumeAfterRestart(t *testing.T) {
	src, _ := bundle.OpenStore(t.TempDir())
	m := digits(t, src, nil)
	dir := t.TempDir()
	s, err := chunkstore.Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	all := s.Missing(m)
	for _, r := range all[:4] {
		data, _ := src.Chunk(r.SHA256)
		if err := s.Put(ctx, r, data); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	// What a power cut mid-write could leave.
	os.WriteFile(filepath.Join(dir, "tmp", "chunk-123"), []byte("partial"), 0o600)
	torn := all[4].SHA256
	p := filepath.Join(dir, "chunks", hex.EncodeToString(torn[:1]), hex.EncodeToString(torn[:]))
	os.MkdirAll(filepath.Dir(p), 0o700)
	os.WriteFile(p, []byte("half"), 0o600)

	s = open(t, dir)
	if got := s.Missing(m); len(got) != len(all)-4 || got[0] != all[4] {
		t.Fatalf("after restart missing %d (first %+v), want %d from %+v", len(got), got[0], len(all)-4, all[4])
	}
	if s.Have(torn) {
		t.Fatal("a torn chunk file counts as present")
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatal("temporary files survived a restart")
	}
	if n := fetch(t, s, src, m); n != len(all)-4 {
		t.Fatalf("resumed with %d chunks, want %d", n, len(all)-4)
	}
	for _, r := range all {
		if _, err := s.Read(ctx, r.SHA256); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadDropsDamagedChunk(t *testing.T) {
	src, _ := bundle.OpenStore(t.TempDir())
	m := digits(t, src, nil)
	s := open(t, t.TempDir())
	fetch(t, s, src, m)
	r := chunkstore.Refs(m)[0]
	p := filepath.Join(s.Dir(), "chunks", hex.EncodeToString(r.SHA256[:1]), hex.EncodeToString(r.SHA256[:]))
	if err := os.WriteFile(p, []byte("rot"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, r.SHA256); !errors.Is(err, chunkstore.ErrMismatch) {
		t.Fatalf("damaged chunk: %v", err)
	}
	if miss := s.Missing(m); len(miss) != 1 || miss[0].SHA256 != r.SHA256 {
		t.Fatalf("damaged chunk not asked for again: %+v", miss)
	}
}
