package storetest

import (
	"context"
	"crypto/sha256"
	"errors"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// testBundleChunks: chunks are kept by their hash and refused when they
// do not match it or are too large; a manifest is stored only when every
// chunk it names is; chunks no manifest names are collected only past the
// grace period, and never one a stored manifest names.
func testBundleChunks(t *testing.T, s *store.Store) {
	ctx := context.Background()
	c1, c2, c3 := []byte("chunk one"), []byte("chunk two"), []byte("orphan chunk")
	s1, s2, s3 := sha256.Sum256(c1), sha256.Sum256(c2), sha256.Sum256(c3)
	for _, c := range [][]byte{c1, c2, c1} { // the second c1: nothing
		if err := s.PutChunk(ctx, sha256.Sum256(c), c, now); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutChunk(ctx, s3, c3, now-10); err != nil {
		t.Fatal(err)
	}
	if err := s.PutChunk(ctx, s1, c2, now); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("chunk under another's hash: %v, want ErrInvalid", err)
	}
	big := make([]byte, store.MaxChunkBytes+1)
	if err := s.PutChunk(ctx, sha256.Sum256(big), big, now); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("chunk over the limit: %v, want ErrInvalid", err)
	}
	if got, err := s.Chunk(ctx, s1); err != nil || string(got) != "chunk one" {
		t.Fatalf("chunk one: %q, %v", got, err)
	}
	if ok, err := s.HasChunk(ctx, sha256.Sum256(big)); err != nil || ok {
		t.Fatalf("a refused chunk is stored: %v, %v", ok, err)
	}
	if _, err := s.Chunk(ctx, sha256.Sum256(big)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent chunk: %v, want ErrNotFound", err)
	}

	raw := []byte("manifest naming chunk one and two")
	digest := hexSum(raw)
	absent := sha256.Sum256([]byte("never uploaded"))
	err := s.PutManifest(ctx, digest, raw, [][32]byte{s1, absent, s2}, now+5)
	var missing *store.MissingChunksError
	if !errors.As(err, &missing) || !reflect.DeepEqual(missing.Missing, [][32]byte{absent}) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("manifest with a chunk missing: %v, want MissingChunksError naming it", err)
	}
	if _, err := s.Manifest(ctx, digest); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused manifest is stored: %v", err)
	}
	if err := s.PutManifest(ctx, hexSum([]byte("other")), raw, [][32]byte{s1}, now); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("manifest under another digest: %v, want ErrInvalid", err)
	}
	if err := s.PutManifest(ctx, digest, raw, [][32]byte{s1, s2, s1}, now+5); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(ctx, digest, raw, [][32]byte{s1, s2}, now+6); err != nil { // again: nothing
		t.Fatal(err)
	}
	if got, err := s.Manifest(ctx, digest); err != nil || string(got) != string(raw) {
		t.Fatalf("manifest: %q, %v", got, err)
	}
	if ds, err := s.ManifestDigests(ctx); err != nil || !reflect.DeepEqual(ds, []string{digest}) {
		t.Fatalf("digests %v, %v", ds, err)
	}

	// The orphan was added at now-10; the manifest's chunks were marked
	// used at now+5. Within the grace period nothing goes.
	if n, err := s.CollectChunks(ctx, now-10); err != nil || n != 0 {
		t.Fatalf("collect before the orphan was added: %d, %v; want 0", n, err)
	}
	if n, err := s.CollectChunks(ctx, now+1000); err != nil || n != 1 {
		t.Fatalf("collect: %d, %v; want the orphan alone", n, err)
	}
	for _, c := range []struct {
		sum  [32]byte
		want bool
	}{{s1, true}, {s2, true}, {s3, false}} {
		if ok, err := s.HasChunk(ctx, c.sum); err != nil || ok != c.want {
			t.Errorf("chunk %x after collection: %v, %v; want %v", c.sum[:4], ok, err, c.want)
		}
	}
	// A manifest naming a collected chunk is refused.
	raw2 := []byte("manifest naming the orphan")
	if err := s.PutManifest(ctx, hexSum(raw2), raw2, [][32]byte{s3}, now+2000); !errors.As(err, &missing) {
		t.Fatalf("manifest naming a collected chunk: %v", err)
	}
}

func hexSum(b []byte) string {
	const hexdigits = "0123456789abcdef"
	sum := sha256.Sum256(b)
	out := make([]byte, 64)
	for i, c := range sum {
		out[2*i], out[2*i+1] = hexdigits[c>>4], hexdigits[c&15]
	}
	return string(out)
}

// testReleaseFiles: a repository's files are written against the
// generation read; a writer on an old generation gets ErrChanged; a file
// is replaced only by a higher version; a fenced write under an old
// lease epoch is refused; a refused write changes nothing.
func testReleaseFiles(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if fs, gen, err := s.ReleaseFiles(ctx, "release"); err != nil || gen != 0 || len(fs) != 0 {
		t.Fatalf("empty repository: %v %d %v", fs, gen, err)
	}
	f := func(name string, v int64, data string) store.ReleaseFile {
		return store.ReleaseFile{Name: name, Version: v, Data: []byte(data)}
	}
	gen, err := s.PutReleaseFiles(ctx, "release", 0, []store.ReleaseFile{f("1.root.json", 1, "root1"), f("timestamp.json", 1, "ts1")})
	if err != nil || gen != 1 {
		t.Fatalf("first write: %d, %v", gen, err)
	}
	if _, err := s.PutReleaseFiles(ctx, "release", 0, []store.ReleaseFile{f("timestamp.json", 2, "ts2")}); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("a second first write: %v, want ErrChanged", err)
	}
	if gen, err = s.PutReleaseFiles(ctx, "release", 1, []store.ReleaseFile{f("1.root.json", 1, "root1"), f("timestamp.json", 2, "ts2")}); err != nil || gen != 2 {
		t.Fatalf("second write: %d, %v", gen, err)
	}
	// Another writer that read generation 1 signed its own version 2.
	if _, err := s.PutReleaseFiles(ctx, "release", 1, []store.ReleaseFile{f("timestamp.json", 2, "ts2-other")}); !errors.Is(err, store.ErrChanged) {
		t.Fatalf("write on an old generation: %v, want ErrChanged", err)
	}
	for _, bad := range [][]store.ReleaseFile{
		{f("timestamp.json", 2, "ts2-other")}, // the same version, other bytes
		{f("timestamp.json", 1, "ts1")},       // an older version
		{f("1.root.json", 1, "another root1")},
	} {
		if _, err := s.PutReleaseFiles(ctx, "release", 2, append([]store.ReleaseFile{f("snapshot.json", 9, "snap9")}, bad...)); !errors.Is(err, store.ErrConflict) {
			t.Errorf("%s v%d: %v, want ErrConflict", bad[0].Name, bad[0].Version, err)
		}
	}
	if _, err := s.PutReleaseFiles(ctx, "release", 2, []store.ReleaseFile{{Name: "x.json", Version: 0, Data: []byte("x")}}); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("version 0: %v, want ErrInvalid", err)
	}
	fs, gen, err := s.ReleaseFiles(ctx, "release")
	want := map[string]store.ReleaseFile{"1.root.json": f("1.root.json", 1, "root1"), "timestamp.json": f("timestamp.json", 2, "ts2")}
	if err != nil || gen != 2 || !reflect.DeepEqual(fs, want) {
		t.Fatalf("after refusals: %v gen %d %v; want %v gen 2", fs, gen, err, want)
	}
	if g, err := s.ReleaseGeneration(ctx, "director"); err != nil || g != 0 {
		t.Fatalf("another repository: %d, %v", g, err)
	}

	// Fenced: the lease's holder writes; after a successor began, the old
	// epoch writes nothing.
	l1, err := s.TryLease(ctx, "release-test", "a")
	if err != nil {
		t.Fatal(err)
	}
	if gen, err = s.PutReleaseFilesFenced(ctx, "release-test", l1.Epoch, "release", 2, []store.ReleaseFile{f("timestamp.json", 3, "ts3")}); err != nil || gen != 3 {
		t.Fatalf("fenced write by the leader: %d, %v", gen, err)
	}
	l1.Release()
	l2, err := s.TryLease(ctx, "release-test", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	if _, err := s.PutReleaseFilesFenced(ctx, "release-test", l1.Epoch, "release", 3, []store.ReleaseFile{f("timestamp.json", 4, "ts4-stale")}); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("write by the old leader: %v, want ErrFenced", err)
	}
	if fs, gen, _ := s.ReleaseFiles(ctx, "release"); gen != 3 || string(fs["timestamp.json"].Data) != "ts3" {
		t.Fatalf("after the stale leader's write: gen %d, timestamp %q", gen, fs["timestamp.json"].Data)
	}
}
