package chunkstore_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
)

// TestMemoryIndex: with the sim's in-memory index, chunks are put, read
// back and deduplicated as with the file index, no index file is made, and
// a reopened store (an empty index) removes the chunk files it no longer
// knows.
func TestMemoryIndex(t *testing.T) {
	src, err := bundle.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	m := digits(t, src, nil)
	dir := t.TempDir()
	s, err := chunkstore.OpenOptions(ctx, dir, chunkstore.Options{MemoryIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	if n := fetch(t, s, src, m); n == 0 {
		t.Fatal("nothing to fetch")
	}
	if miss := s.Missing(m); len(miss) != 0 {
		t.Fatalf("%d chunks missing after fetching all", len(miss))
	}
	ref := m.GetFiles()[0].GetChunks()[0]
	var sum [32]byte
	copy(sum[:], ref.GetSha256())
	got, err := s.Read(ctx, sum)
	want, _ := src.Chunk(sum)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("Read: %d bytes, %v; want %d", len(got), err, len(want))
	}
	if _, err := os.Stat(filepath.Join(dir, chunkstore.DBFile)); !os.IsNotExist(err) {
		t.Errorf("index file: %v, want none", err)
	}
	s.Close()
	s2, err := chunkstore.OpenOptions(ctx, dir, chunkstore.Options{MemoryIndex: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if b, n := s2.Usage(); b != 0 || n != 0 || len(s2.Missing(m)) == 0 {
		t.Errorf("reopened: %d bytes in %d chunks, want an empty store", b, n)
	}
}
