// Package sqlstore keeps bundles' chunks and manifests in the control
// plane's database (controlplane/store), so every replica on one
// PostgreSQL database serves what was uploaded to any of them. It has the
// methods of the folder store (controlplane/bundle.Store) and the same
// guarantees: a chunk is stored only under its SHA-256, a manifest only
// when it decodes and every chunk it names is stored, and what is read
// is checked against its hash on the way out, so a damaged row is an
// error, never served.
//
// A bundle is never held whole: it travels as its chunks (at most
// 256 KiB each), one row each.
package sqlstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// DB is the database's part the store needs; *store.Store is one.
type DB interface {
	PutChunk(ctx context.Context, sum [32]byte, data []byte, at int64) error
	Chunk(ctx context.Context, sum [32]byte) ([]byte, error)
	HasChunk(ctx context.Context, sum [32]byte) (bool, error)
	PutManifest(ctx context.Context, digest string, raw []byte, chunks [][32]byte, at int64) error
	Manifest(ctx context.Context, digest string) ([]byte, error)
}

var _ DB = (*store.Store)(nil)

// Timeout bounds each database call: the store's methods take no context
// (they serve the delivery's waves and repairs, which have none per
// chunk).
const Timeout = 30 * time.Second

// Store is a bundle store in the database.
type Store struct {
	db  DB
	now func() time.Time
}

// New returns a store over db; now (nil: time.Now) stamps what is added.
func New(db DB, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), Timeout)
}

// PutChunk stores data under sum, refusing data whose SHA-256 is not sum
// (bundle.ErrMismatch). Storing a chunk already present does nothing.
func (s *Store) PutChunk(sum [32]byte, data []byte) error {
	c, cancel := ctx()
	defer cancel()
	err := s.db.PutChunk(c, sum, data, s.now().UnixMilli())
	if errors.Is(err, store.ErrInvalid) {
		return fmt.Errorf("%w: %w", bundle.ErrMismatch, err)
	}
	return err
}

// Chunk returns the chunk stored under sum: bundle.ErrNotFound if none,
// bundle.ErrMismatch if its row no longer hashes to sum.
func (s *Store) Chunk(sum [32]byte) ([]byte, error) {
	c, cancel := ctx()
	defer cancel()
	data, err := s.db.Chunk(c, sum)
	return data, mapErr(err)
}

// HasChunk reports whether a chunk is stored; false when the database
// does not answer (the upload is then asked for the chunk again).
func (s *Store) HasChunk(sum [32]byte) bool {
	c, cancel := ctx()
	defer cancel()
	ok, err := s.db.HasChunk(c, sum)
	return err == nil && ok
}

// PutManifest validates and stores a manifest's bytes, returning its
// digest. Every chunk it names must be stored (bundle.ErrNotFound if
// not), unlike the folder store: the database keeps which chunks each
// manifest names, for the collector of unreferenced chunks.
func (s *Store) PutManifest(raw []byte) (string, error) {
	m := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		return "", fmt.Errorf("put manifest: %w", err)
	}
	var chunks [][32]byte
	for _, f := range m.GetFiles() {
		for _, ch := range f.GetChunks() {
			if len(ch.GetSha256()) != 32 {
				return "", fmt.Errorf("put manifest: %s: a chunk hash of %d bytes", f.GetPath(), len(ch.GetSha256()))
			}
			chunks = append(chunks, [32]byte(ch.GetSha256()))
		}
	}
	digest := bundle.Digest(raw)
	c, cancel := ctx()
	defer cancel()
	if err := s.db.PutManifest(c, digest, raw, chunks, s.now().UnixMilli()); err != nil {
		return "", mapErr(err)
	}
	return digest, nil
}

// Manifest returns the raw bytes and the decoded manifest stored under
// digest, checking the bytes still hash to it.
func (s *Store) Manifest(digest string) ([]byte, *pb.BundleManifest, error) {
	if err := pb.CheckDigest(digest); err != nil {
		return nil, nil, err
	}
	c, cancel := ctx()
	defer cancel()
	raw, err := s.db.Manifest(c, digest)
	if err != nil {
		return nil, nil, mapErr(err)
	}
	m := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return raw, m, nil
}

// mapErr gives the store's errors the bundle package's meaning.
func mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrCorrupt):
		return fmt.Errorf("%w: %w", bundle.ErrMismatch, err)
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", bundle.ErrNotFound, err)
	}
	return err
}
