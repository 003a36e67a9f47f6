package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrChanged: a write based on a generation of a release repository that
// is no longer the current one; read it again and redo the work.
var ErrChanged = errors.New("changed since it was read")

// Limits on a release repository's files.
const (
	MaxReleaseFileBytes = 8 << 20
	maxReleaseFiles     = 1024
	maxReleaseName      = 64
)

// ReleaseFile is one signed file of a TUF repository: its name
// (N.root.json, targets.json, snapshot.json, timestamp.json), the version
// its signed part carries, and its bytes.
type ReleaseFile struct {
	Name    string
	Version int64
	Data    []byte
}

// ReleaseGeneration returns the repository's generation: 0 before its
// first write, raised by every write.
func (s *Store) ReleaseGeneration(ctx context.Context, repo string) (int64, error) {
	var gen int64
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT generation FROM release_repos WHERE repo = ?`), repo).Scan(&gen)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("release %s generation: %w", repo, err)
	}
	return gen, nil
}

// ReleaseFiles returns the repository's files by name, with the
// generation they are; an empty map and 0 before its first write.
func (s *Store) ReleaseFiles(ctx context.Context, repo string) (map[string]ReleaseFile, int64, error) {
	out := map[string]ReleaseFile{}
	var gen int64
	// One read transaction, so the generation and the files agree.
	// (SQLite: a read transaction is a snapshot already.)
	var opts *sql.TxOptions
	if s.d.name == "postgres" {
		opts = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
	}
	tx, err := s.rdb.BeginTx(ctx, opts)
	if err != nil {
		return nil, 0, fmt.Errorf("release %s: %w", repo, err)
	}
	defer tx.Rollback()
	err = tx.QueryRowContext(ctx, s.q(`SELECT generation FROM release_repos WHERE repo = ?`), repo).Scan(&gen)
	if errors.Is(err, sql.ErrNoRows) {
		return out, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("release %s: %w", repo, err)
	}
	rows, err := tx.QueryContext(ctx, s.q(`SELECT name, version, data FROM release_files WHERE repo = ?`), repo)
	if err != nil {
		return nil, 0, fmt.Errorf("release %s: %w", repo, err)
	}
	defer rows.Close()
	for rows.Next() {
		var f ReleaseFile
		if err := rows.Scan(&f.Name, &f.Version, &f.Data); err != nil {
			return nil, 0, fmt.Errorf("release %s: %w", repo, err)
		}
		out[f.Name] = f
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("release %s: %w", repo, err)
	}
	return out, gen, nil
}

// PutReleaseFiles writes files into the repository if its generation is
// still base (0: the repository must not exist yet), and returns the new
// generation; ErrChanged if another writer came first. A file replaces
// the stored one of its name only with a higher version (the same bytes
// are no change); a lower or equal version with other bytes is refused
// with ErrConflict, so a version is never published twice with different
// content. Nothing is written on refusal.
func (s *Store) PutReleaseFiles(ctx context.Context, repo string, base int64, files []ReleaseFile) (int64, error) {
	var gen int64
	err := s.inTx(ctx, func(tx *sql.Tx) (err error) {
		gen, err = s.putReleaseFiles(ctx, tx, repo, base, files)
		return err
	})
	return gen, err
}

// PutReleaseFilesFenced is PutReleaseFiles by the holder of lease at
// epoch: ErrFenced, and nothing written, once a newer leader began.
func (s *Store) PutReleaseFilesFenced(ctx context.Context, lease string, epoch uint64, repo string, base int64, files []ReleaseFile) (int64, error) {
	var gen int64
	err := s.FencedTx(ctx, lease, epoch, func(tx *sql.Tx) (err error) {
		gen, err = s.putReleaseFiles(ctx, tx, repo, base, files)
		return err
	})
	return gen, err
}

func (s *Store) putReleaseFiles(ctx context.Context, tx *sql.Tx, repo string, base int64, files []ReleaseFile) (int64, error) {
	if repo == "" || len(repo) > maxReleaseName || len(files) == 0 || len(files) > maxReleaseFiles || base < 0 {
		return 0, fmt.Errorf("put release %q: %w: %d files", repo, ErrInvalid, len(files))
	}
	for _, f := range files {
		if f.Name == "" || len(f.Name) > maxReleaseName || f.Version < 1 || len(f.Data) == 0 || len(f.Data) > MaxReleaseFileBytes {
			return 0, fmt.Errorf("put release %s: %w: file %q version %d, %d bytes", repo, ErrInvalid, f.Name, f.Version, len(f.Data))
		}
	}
	now := time.Now().UnixMilli()
	var cur int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT generation FROM release_repos WHERE repo = ?`+s.d.forUpdate), repo).Scan(&cur)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if base != 0 {
			return 0, fmt.Errorf("put release %s: %w: generation %d is gone", repo, ErrChanged, base)
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO release_repos (repo, generation, updated_at) VALUES (?, 1, ?)`), repo, now); err != nil {
			if s.d.uniqueViolation(err) {
				return 0, fmt.Errorf("put release %s: %w: written by another meanwhile", repo, ErrChanged)
			}
			return 0, fmt.Errorf("put release %s: %w", repo, err)
		}
		cur = 1
	case err != nil:
		return 0, fmt.Errorf("put release %s: %w", repo, err)
	case cur != base:
		return 0, fmt.Errorf("put release %s: %w: generation %d, read %d", repo, ErrChanged, cur, base)
	default:
		cur++
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE release_repos SET generation = ?, updated_at = ? WHERE repo = ?`), cur, now, repo); err != nil {
			return 0, fmt.Errorf("put release %s: %w", repo, err)
		}
	}
	for _, f := range files {
		var version int64
		var data []byte
		err := tx.QueryRowContext(ctx, s.q(`SELECT version, data FROM release_files WHERE repo = ? AND name = ?`), repo, f.Name).Scan(&version, &data)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO release_files (repo, name, version, data) VALUES (?, ?, ?, ?)`), repo, f.Name, f.Version, f.Data)
		case err != nil:
		case bytes.Equal(data, f.Data):
			continue
		case f.Version <= version:
			return 0, fmt.Errorf("put release %s: %w: %s version %d does not follow the stored %d", repo, ErrConflict, f.Name, f.Version, version)
		default:
			_, err = tx.ExecContext(ctx, s.q(`UPDATE release_files SET version = ?, data = ? WHERE repo = ? AND name = ?`), f.Version, f.Data, repo, f.Name)
		}
		if err != nil {
			return 0, fmt.Errorf("put release %s: %w", repo, err)
		}
	}
	return cur, nil
}
