package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
	"time"
)

// migrationFiles are the schema's versions, applied in order: NNNN_name.sql,
// numbered from 0001 without gaps. A released migration is never edited; a
// change is a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in order, checking their
// numbering.
func migrations() ([]migration, error) {
	return loadMigrations(migrationFiles, "migrations")
}

func loadMigrations(fsys fs.FS, dir string) ([]migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names { // fs.Glob returns names sorted
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || len(num) != 4 {
			return nil, fmt.Errorf("migration %s: name is not NNNN_name.sql", base)
		}
		if v != len(ms)+1 {
			return nil, fmt.Errorf("migration %s: expected version %d", base, len(ms)+1)
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(b)})
	}
	return ms, nil
}

const createSchemaMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version       BIGINT NOT NULL PRIMARY KEY,
	applied_at_ms BIGINT NOT NULL
)`

// Migrate brings the database schema to the latest version this binary
// knows, each migration in its own transaction. It is idempotent, and safe
// to run from several processes at once. It fails with ErrSchemaTooNew when
// the database is at a later version than this binary knows.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	// Under the migration lock too: PostgreSQL's CREATE TABLE IF NOT
	// EXISTS can still collide with the same statement in another replica.
	if err := s.inTx(ctx, func(tx *sql.Tx) error {
		if s.d.migrationLock != "" {
			if _, err := tx.ExecContext(ctx, s.d.migrationLock); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		_, err := tx.ExecContext(ctx, createSchemaMigrations)
		return err
	}); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	cur, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if cur > len(ms) {
		return tooNew(cur, len(ms))
	}
	for _, m := range ms[cur:] {
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			if s.d.migrationLock != "" {
				if _, err := tx.ExecContext(ctx, s.d.migrationLock); err != nil {
					return fmt.Errorf("lock: %w", err)
				}
			}
			v, err := schemaVersion(ctx, tx)
			if err != nil {
				return err
			}
			if v > len(ms) {
				return tooNew(v, len(ms))
			}
			if v >= m.version {
				return nil // applied meanwhile by another process
			}
			text, err := s.d.expand(m.sql)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, text); err != nil {
				return err
			}
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, ?)`),
				m.version, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			if errors.Is(err, ErrSchemaTooNew) {
				return err
			}
			return fmt.Errorf("migrate %s: %w", m.name, err)
		}
	}
	return nil
}

func tooNew(have, know int) error {
	return fmt.Errorf("%w: database is at version %d, this binary knows versions up to %d; run a newer release or restore a backup",
		ErrSchemaTooNew, have, know)
}

// SchemaVersion returns the database's schema version: the newest migration
// applied, 0 for an empty database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	return schemaVersion(ctx, s.wdb)
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q querier) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return int(v.Int64), nil
}
