package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
)

// MaxChunkBytes is the largest chunk the store keeps: a bundle's chunks
// are at most 256 KiB (flotillapb.MaxChunkSize).
const MaxChunkBytes = 256 << 10

// MaxManifestBytes is the largest manifest the store keeps
// (flotillapb.MaxManifestSize).
const MaxManifestBytes = 8 << 20

// maxManifestChunks is the most chunks one manifest may name
// (flotillapb.MaxChunks).
const maxManifestChunks = 1 << 17

// ErrCorrupt: a row whose content no longer matches its hash.
var ErrCorrupt = errors.New("stored content does not match its hash")

// PutChunk stores data under its SHA-256, sum; data that does not hash to
// sum, or is larger than MaxChunkBytes, is refused with ErrInvalid.
// Storing a chunk already present does nothing.
func (s *Store) PutChunk(ctx context.Context, sum [32]byte, data []byte, at int64) error {
	if len(data) == 0 || len(data) > MaxChunkBytes {
		return fmt.Errorf("put chunk %x: %w: %d bytes (1 to %d)", sum[:8], ErrInvalid, len(data), MaxChunkBytes)
	}
	if sha256.Sum256(data) != sum {
		return fmt.Errorf("put chunk %x: %w: content does not match its hash", sum[:8], ErrInvalid)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO bundle_chunks (sha256, size, added_at, data) VALUES (?, ?, ?, ?)
		ON CONFLICT (sha256) DO NOTHING`), sum[:], len(data), at, data)
	if err != nil {
		return fmt.Errorf("put chunk %x: %w", sum[:8], err)
	}
	return nil
}

// Chunk returns the chunk stored under sum: ErrNotFound if there is none,
// ErrCorrupt if its row no longer hashes to sum (it is never returned).
func (s *Store) Chunk(ctx context.Context, sum [32]byte) ([]byte, error) {
	var data []byte
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT data FROM bundle_chunks WHERE sha256 = ?`), sum[:]).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("chunk %x: %w", sum[:8], ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chunk %x: %w", sum[:8], err)
	}
	if sha256.Sum256(data) != sum {
		return nil, fmt.Errorf("chunk %x: %w", sum[:8], ErrCorrupt)
	}
	return data, nil
}

// HasChunk reports whether a chunk is stored under sum.
func (s *Store) HasChunk(ctx context.Context, sum [32]byte) (bool, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT 1 FROM bundle_chunks WHERE sha256 = ?`), sum[:]).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("has chunk %x: %w", sum[:8], err)
	}
	return true, nil
}

// MissingChunksError is PutManifest's refusal of a manifest naming chunks
// not stored; it wraps ErrNotFound.
type MissingChunksError struct{ Missing [][32]byte }

func (e *MissingChunksError) Error() string {
	return fmt.Sprintf("%d chunks the manifest names are not stored (first %x)", len(e.Missing), e.Missing[0][:8])
}

func (e *MissingChunksError) Unwrap() error { return ErrNotFound }

// PutManifest stores a manifest's bytes under digest (the hex SHA-256 of
// raw), recording the chunks it names, in one transaction that first
// marks each of those chunks as used at at: a chunk the collector has
// taken meanwhile fails it with a *MissingChunksError, and a chunk it
// marked is not collected for the grace period after at. The store does
// not decode the manifest: the caller (controlplane/bundle) has, and
// passes its chunks. Storing a manifest already present does nothing.
func (s *Store) PutManifest(ctx context.Context, digest string, raw []byte, chunks [][32]byte, at int64) error {
	if len(raw) == 0 || len(raw) > MaxManifestBytes || len(chunks) > maxManifestChunks {
		return fmt.Errorf("put manifest: %w: %d bytes, %d chunks", ErrInvalid, len(raw), len(chunks))
	}
	if sum := sha256.Sum256(raw); fmt.Sprintf("%x", sum) != digest {
		return fmt.Errorf("put manifest %.16s: %w: bytes do not match the digest", digest, ErrInvalid)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		touch, err := tx.PrepareContext(ctx, s.q(`UPDATE bundle_chunks SET added_at = ? WHERE sha256 = ? AND added_at < ?`))
		if err != nil {
			return err
		}
		defer touch.Close()
		has, err := tx.PrepareContext(ctx, s.q(`SELECT 1 FROM bundle_chunks WHERE sha256 = ?`+s.d.forShare))
		if err != nil {
			return err
		}
		defer has.Close()
		ref, err := tx.PrepareContext(ctx, s.q(`INSERT INTO bundle_manifest_chunks (digest, sha256) VALUES (?, ?) ON CONFLICT DO NOTHING`))
		if err != nil {
			return err
		}
		defer ref.Close()
		var missing [][32]byte
		seen := make(map[[32]byte]bool, len(chunks))
		for _, c := range chunks {
			if seen[c] {
				continue
			}
			seen[c] = true
			if _, err := touch.ExecContext(ctx, at, c[:], at); err != nil {
				return err
			}
			var one int
			switch err := has.QueryRowContext(ctx, c[:]).Scan(&one); {
			case errors.Is(err, sql.ErrNoRows):
				missing = append(missing, c)
				continue
			case err != nil:
				return err
			}
			if _, err := ref.ExecContext(ctx, digest, c[:]); err != nil {
				return err
			}
		}
		if len(missing) > 0 {
			return &MissingChunksError{Missing: missing}
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO bundle_manifests (digest, added_at, raw) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING`),
			digest, at, raw)
		return err
	})
	if err != nil {
		return fmt.Errorf("put manifest %.16s: %w", digest, err)
	}
	return nil
}

// Manifest returns the manifest stored under digest: ErrNotFound if
// there is none, ErrCorrupt if its bytes no longer hash to digest.
func (s *Store) Manifest(ctx context.Context, digest string) ([]byte, error) {
	var raw []byte
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT raw FROM bundle_manifests WHERE digest = ?`), digest).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("manifest %.16s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("manifest %.16s: %w", digest, err)
	}
	if sum := sha256.Sum256(raw); fmt.Sprintf("%x", sum) != digest {
		return nil, fmt.Errorf("manifest %.16s: %w", digest, ErrCorrupt)
	}
	return raw, nil
}

// ManifestDigests lists the stored manifests' digests, sorted.
func (s *Store) ManifestDigests(ctx context.Context) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT digest FROM bundle_manifests ORDER BY digest`)
	if err != nil {
		return nil, fmt.Errorf("manifest digests: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CollectChunks deletes the chunks no stored manifest names that were
// added (or last named by a manifest being stored) before before, and
// returns how many. Chunks are uploaded before their manifest, so the
// grace period between before and now must outlast an upload.
func (s *Store) CollectChunks(ctx context.Context, before int64) (int64, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM bundle_chunks WHERE added_at < ?
		AND NOT EXISTS (SELECT 1 FROM bundle_manifest_chunks r WHERE r.sha256 = bundle_chunks.sha256)`), before)
	if err != nil {
		return 0, fmt.Errorf("collect chunks: %w", err)
	}
	return res.RowsAffected()
}
