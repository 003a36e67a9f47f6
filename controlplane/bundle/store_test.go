package bundle_test

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func TestStoreBuildInto(t *testing.T) {
	s, err := bundle.OpenStore(t.TempDir())
	must(t, err)
	raw, digest, m := build(t, filepath.Join("testdata", "digits"), bundle.Options{ChunkSize: pb.MinChunkSize, Chunks: s})
	if d, err := s.PutManifest(raw); err != nil || d != digest {
		t.Fatalf("PutManifest = %s, %v; want %s", d, err, digest)
	}
	got, gm, err := s.Manifest(digest)
	if err != nil || string(got) != string(raw) || gm.GetName() != "digits" {
		t.Fatalf("Manifest: %v", err)
	}
	for _, f := range m.GetFiles() {
		for _, c := range f.GetChunks() {
			data, err := s.Chunk([32]byte(c.GetSha256()))
			if err != nil || len(data) != int(c.GetLength()) {
				t.Fatalf("chunk of %s: %d bytes, %v", f.GetPath(), len(data), err)
			}
		}
	}
}

func TestStoreRefusesBadContent(t *testing.T) {
	dir := t.TempDir()
	s, err := bundle.OpenStore(dir)
	must(t, err)
	sum := sha256.Sum256([]byte("good"))
	if err := s.PutChunk(sum, []byte("evil")); !errors.Is(err, bundle.ErrMismatch) {
		t.Fatalf("PutChunk of mismatched data: %v", err)
	}
	if s.HasChunk(sum) {
		t.Fatal("kept a chunk that did not match its hash")
	}
	must(t, s.PutChunk(sum, []byte("good")))
	// Damage on disk is caught on the way out.
	h := filepath.Join(dir, "chunks")
	ents, _ := filepath.Glob(filepath.Join(h, "*", "*"))
	must(t, os.WriteFile(ents[0], []byte("bad!"), 0o644))
	if _, err := s.Chunk(sum); !errors.Is(err, bundle.ErrMismatch) {
		t.Fatalf("damaged chunk served: %v", err)
	}
	if _, err := s.Chunk(sha256.Sum256([]byte("absent"))); !errors.Is(err, bundle.ErrNotFound) {
		t.Fatalf("absent chunk: %v", err)
	}
	if _, err := s.PutManifest([]byte("not a manifest")); err == nil {
		t.Fatal("stored garbage as a manifest")
	}
	if _, _, err := s.Manifest("../../etc/passwd"); err == nil {
		t.Fatal("read a manifest by a path")
	}
}
