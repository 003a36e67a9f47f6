package server

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestBundlesImportedOnce: a server from before, its bundles in
// DATA/bundles, started on PostgreSQL: every bundle is imported into the
// database and served from it, the folder left as it was with a note; a
// later start imports nothing again (a bundle added to the folder since is
// not read: the database is the store).
func TestBundlesImportedOnce(t *testing.T) {
	dir := t.TempDir()
	folder, err := bundle.OpenStore(filepath.Join(dir, "bundles"))
	if err != nil {
		t.Fatal(err)
	}
	build := func(counter string) string {
		src := t.TempDir()
		if err := os.CopyFS(src, os.DirFS(filepath.Join("..", "bundle", "testdata", "digits"))); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, "labels.txt"), []byte(counter+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		raw, digest, err := bundle.Build(src, bundle.Options{ChunkSize: pb.MinChunkSize, Chunks: folder})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := folder.PutManifest(raw); err != nil {
			t.Fatal(err)
		}
		return digest
	}
	first := build("one")
	s := &Server{cfg: Config{DataDir: dir, Now: time.Now}, store: openPG(t, pgtest.Database(t)), log: slog.New(slog.DiscardHandler)}
	bs, err := s.openBundles()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := bs.(*bundle.Store); ok {
		t.Fatal("on PostgreSQL the server uses the folder store")
	}
	_, m, err := bs.Manifest(first)
	if err != nil {
		t.Fatalf("the imported manifest: %v", err)
	}
	for _, f := range m.GetFiles() {
		for _, c := range f.GetChunks() {
			if _, err := bs.Chunk([32]byte(c.GetSha256())); err != nil {
				t.Fatalf("an imported chunk: %v", err)
			}
		}
	}
	if _, _, err := folder.Manifest(first); err != nil {
		t.Fatalf("the folder's copy after the import: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "bundles", importedMarker)); err != nil {
		t.Fatalf("no note of the import: %v", err)
	}
	later := build("two")
	bs, err = s.openBundles()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := bs.Manifest(later); err == nil {
		t.Fatal("a second start imported the folder again")
	}
	if _, _, err := bs.Manifest(first); err != nil {
		t.Fatalf("after a second start: %v", err)
	}
}
