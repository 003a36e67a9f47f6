package sqlstore_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/bundle/sqlstore"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestImportServeAndRefuseDamage, on PostgreSQL: a folder store's bundle
// imported (twice: the second changes nothing) is served chunk by chunk
// from the database, verified; a chunk or manifest row changed behind the
// store's back is refused, never served; a manifest naming a chunk not
// uploaded is refused; the folder copy is left as it was.
func TestImportServeAndRefuseDamage(t *testing.T) {
	dsn := pgtest.Database(t)
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	folder, err := bundle.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, digest, err := bundle.Build(filepath.Join("..", "testdata", "digits"), bundle.Options{ChunkSize: pb.MinChunkSize, Chunks: folder})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := folder.PutManifest(raw); err != nil {
		t.Fatal(err)
	}
	s := sqlstore.New(st, nil)
	for range 2 {
		if n, err := sqlstore.Import(folder, s); err != nil || n != 1 {
			t.Fatalf("import: %d, %v; want 1 manifest", n, err)
		}
	}
	got, m, err := s.Manifest(digest)
	if err != nil || string(got) != string(raw) {
		t.Fatalf("manifest from the database: %v", err)
	}
	var first [32]byte
	chunks := 0
	for _, f := range m.GetFiles() {
		for _, c := range f.GetChunks() {
			sum := [32]byte(c.GetSha256())
			want, err := folder.Chunk(sum)
			if err != nil {
				t.Fatal(err)
			}
			data, err := s.Chunk(sum)
			if err != nil || string(data) != string(want) {
				t.Fatalf("chunk %x from the database: %d bytes, %v", sum[:4], len(data), err)
			}
			if chunks == 0 {
				first = sum
			}
			chunks++
		}
	}
	if chunks < 2 {
		t.Fatalf("the test bundle has %d chunks; want several", chunks)
	}
	if _, _, err := folder.Manifest(digest); err != nil {
		t.Fatalf("the folder copy after import: %v", err)
	}

	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE bundle_chunks SET data = overlay(data placing '\x00'::bytea from 1 for 1) WHERE sha256 = $1`, first[:]); err != nil {
		t.Fatal(err)
	}
	if data, err := s.Chunk(first); !errors.Is(err, bundle.ErrMismatch) || data != nil {
		t.Fatalf("damaged chunk row: %d bytes, %v; want ErrMismatch and nothing", len(data), err)
	}
	if _, err := db.Exec(`UPDATE bundle_manifests SET raw = raw || '\x00'::bytea WHERE digest = $1`, digest); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Manifest(digest); !errors.Is(err, bundle.ErrMismatch) {
		t.Fatalf("damaged manifest row: %v; want ErrMismatch", err)
	}

	if err := s.PutChunk(sha256.Sum256([]byte("good")), []byte("evil")); !errors.Is(err, bundle.ErrMismatch) {
		t.Fatalf("chunk under another's hash: %v", err)
	}
	other, err := bundle.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw2, _, err := bundle.Build(filepath.Join("..", "testdata", "digits"), bundle.Options{ChunkSize: pb.MinChunkSize * 2, Chunks: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutManifest(raw2); !errors.Is(err, bundle.ErrNotFound) {
		t.Fatalf("manifest whose chunks were never uploaded: %v; want ErrNotFound", err)
	}
}
