package bundle

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Errors callers branch on with errors.Is.
var (
	ErrNotFound = errors.New("not in the bundle store")
	ErrMismatch = errors.New("content does not match its hash")
)

// Store is a content-addressed store of chunks and manifests in a folder.
// It is safe for concurrent use: every write is a rename of a complete
// file, and equal content lands at the same name.
type Store struct {
	dir string
}

// OpenStore opens (creating if needed) the store in dir.
func OpenStore(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "chunks"), filepath.Join(dir, "manifests")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("open bundle store: %w", err)
		}
	}
	return &Store{dir: dir}, nil
}

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

func (s *Store) chunkPath(sum [32]byte) string {
	h := hex.EncodeToString(sum[:])
	return filepath.Join(s.dir, "chunks", h[:2], h)
}

// PutChunk stores data under sum, refusing data whose SHA-256 is not sum.
// Storing a chunk already present does nothing.
func (s *Store) PutChunk(sum [32]byte, data []byte) error {
	if sha256.Sum256(data) != sum {
		return fmt.Errorf("put chunk %x: %w", sum[:8], ErrMismatch)
	}
	p := s.chunkPath(sum)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("put chunk: %w", err)
	}
	if err := writeAtomic(p, data, 0o644); err != nil {
		return fmt.Errorf("put chunk: %w", err)
	}
	return nil
}

// Chunk returns the chunk stored under sum, checking its hash on the way
// out so a chunk damaged on disk is never served.
func (s *Store) Chunk(sum [32]byte) ([]byte, error) {
	data, err := os.ReadFile(s.chunkPath(sum))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %x: %w", sum[:8], ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %x: %w", sum[:8], err)
	}
	if sha256.Sum256(data) != sum {
		return nil, fmt.Errorf("chunk %x on disk: %w", sum[:8], ErrMismatch)
	}
	return data, nil
}

// HasChunk reports whether a chunk is stored.
func (s *Store) HasChunk(sum [32]byte) bool {
	_, err := os.Stat(s.chunkPath(sum))
	return err == nil
}

// PutManifest validates and stores a manifest's bytes, returning its
// digest. It does not check that the manifest's chunks are present.
func (s *Store) PutManifest(raw []byte) (string, error) {
	if err := wire.Decode(raw, pb.MaxManifestSize, new(pb.BundleManifest)); err != nil {
		return "", fmt.Errorf("put manifest: %w", err)
	}
	digest := Digest(raw)
	if err := writeAtomic(filepath.Join(s.dir, "manifests", digest), raw, 0o644); err != nil {
		return "", fmt.Errorf("put manifest: %w", err)
	}
	return digest, nil
}

// Manifest returns the raw bytes and the decoded manifest stored under
// digest, checking the bytes still hash to it.
func (s *Store) Manifest(digest string) ([]byte, *pb.BundleManifest, error) {
	if err := pb.CheckDigest(digest); err != nil {
		return nil, nil, err
	}
	raw, err := os.ReadFile(filepath.Join(s.dir, "manifests", digest))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("manifest %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if Digest(raw) != digest {
		return nil, nil, fmt.Errorf("manifest %s on disk: %w", digest, ErrMismatch)
	}
	m := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return raw, m, nil
}

// Digest is a manifest's digest: the lowercase hex SHA-256 of its bytes.
func Digest(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// writeAtomic writes data to path so that a crash leaves the old file or
// the new one, never part of it: a temporary file in the same folder,
// fsync, rename, fsync of the folder.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Manifests lists the digests of the manifests stored, sorted; names in
// the folder that are not digests are left out.
func (s *Store) Manifests() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "manifests"))
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	var out []string
	for _, e := range ents {
		if e.Type().IsRegular() && pb.CheckDigest(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}
