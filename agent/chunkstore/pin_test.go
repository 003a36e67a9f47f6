package chunkstore_test

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestPinSurvivesRestartAndCollection: half of v1 is fetched under a pin,
// the store is closed (a restart), and a collection naming only v2 keeps
// v1's fetched chunks; once unpinned they go. A newer pin under the same
// key replaces the older.
func TestPinSurvivesRestartAndCollection(t *testing.T) {
	src, v1, v2 := twoVersions(t)
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Pin(ctx, "digits", v1); err != nil {
		t.Fatal(err)
	}
	fetch(t, s, src, v2) // the other bundle, whole (shares model.onnx's chunks)
	l1 := labelsRef(t, v1)
	data, _ := src.Chunk(l1.SHA256)
	if err := s.Put(ctx, l1, data); err != nil { // v1's own chunk, fetched before the cut
		t.Fatal(err)
	}
	s.Close()

	s = open(t, dir)
	if got := s.Pins(); len(got) != 1 || !proto.Equal(got["digits"], v1) {
		t.Fatalf("pins after reopening: %v", got)
	}
	if n, _, err := s.Collect(ctx, []*pb.BundleManifest{v2}); err != nil || n != 0 {
		t.Fatalf("Collect(v2) with v1 pinned = %d, %v; want nothing removed", n, err)
	}
	if !s.Have(l1.SHA256) {
		t.Fatal("the pinned download's chunk was collected")
	}
	// A newer release under the same key replaces the pin: v1's own
	// chunk is no longer named.
	if err := s.Pin(ctx, "digits", v2); err != nil {
		t.Fatal(err)
	}
	if n, _, err := s.Collect(ctx, nil); err != nil || n != 1 || s.Have(l1.SHA256) {
		t.Fatalf("Collect after re-pinning = %d, %v (have v1's chunk %v); want v1's chunk alone removed", n, err, s.Have(l1.SHA256))
	}
	if err := s.Unpin(ctx, "digits"); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(ctx, "digits"); err != nil { // twice: nothing to do
		t.Fatal(err)
	}
	_, count := size(v2)
	if n, _, err := s.Collect(ctx, nil); err != nil || n != count {
		t.Fatalf("Collect after Unpin = %d, %v; want %d", n, err, count)
	}
	s.Close()
	if s = open(t, dir); len(s.Pins()) != 0 {
		t.Fatalf("pins after Unpin and reopening: %v", s.Pins())
	}
}

// TestPinRefusesBadKeys: an empty or oversized key is refused and
// nothing is recorded.
func TestPinRefusesBadKeys(t *testing.T) {
	_, v1, _ := twoVersions(t)
	s := open(t, t.TempDir())
	for _, key := range []string{"", strings.Repeat("k", 257)} {
		if err := s.Pin(ctx, key, v1); err == nil {
			t.Errorf("Pin(%d-byte key) accepted", len(key))
		}
	}
	if len(s.Pins()) != 0 {
		t.Fatalf("pins after refusals: %v", s.Pins())
	}
}

// TestDamagedPinDropped: a pin row whose manifest does not decode is
// dropped on open (its chunks become collectable), and the store opens.
func TestDamagedPinDropped(t *testing.T) {
	_, v1, _ := twoVersions(t)
	dir := t.TempDir()
	s := open(t, dir)
	if err := s.Pin(ctx, "digits", v1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, chunkstore.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE pins SET manifest = x'0a05ff'`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	s = open(t, dir)
	if len(s.Pins()) != 0 {
		t.Fatalf("damaged pin kept: %v", s.Pins())
	}
	s.Close()
	if s = open(t, dir); len(s.Pins()) != 0 {
		t.Fatal("damaged pin row not deleted")
	}
}
