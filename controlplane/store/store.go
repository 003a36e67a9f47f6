// Package store is the control plane's persistent store: devices and their
// labels, enrolment and API tokens, and the audit log.
//
// One type, Store, runs over database/sql. SQLite (modernc.org/sqlite, pure
// Go) is the default backend; PostgreSQL is meant to use the same type with
// another dialect, so the SQL here is portable: ? placeholders rewritten by
// the dialect, times as BIGINT milliseconds since the epoch, booleans as
// INTEGER 0/1, label maps as JSON text. The schema is versioned by the
// embedded migrations/ files and a store refuses a database newer than it.
//
// Callers branch on the sentinel errors with errors.Is: ErrNotFound,
// ErrConflict, ErrInvalid and the enrol token's ErrTokenExhausted,
// ErrTokenExpired and ErrTokenRevoked.
//
// A device, once enrolled, is never deleted: decommissioning keeps its row, so
// its ID is never reused and the audit trail keeps pointing somewhere.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors, wrapped with context by the methods that return them.
var (
	ErrNotFound       = errors.New("not found")
	ErrConflict       = errors.New("already exists")
	ErrInvalid        = errors.New("invalid")
	ErrTokenExhausted = errors.New("enrol token exhausted")
	ErrTokenExpired   = errors.New("enrol token expired")
	ErrTokenRevoked   = errors.New("enrol token revoked")
	// ErrSchemaTooNew is returned when opening a database that a newer
	// release has migrated: this binary would not know how to read it.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
)

// Store is the control plane's persistent store. It is safe for concurrent
// use.
type Store struct {
	// wdb runs every write. rdb runs reads that need not see a transaction
	// in progress; it may be the same pool as wdb.
	wdb, rdb *sql.DB
	d        *dialect

	// Statements on the hot paths, prepared once: a lookup per MQTT connect
	// and a write per heartbeat. Preparing saves about a third of a lookup.
	credentialStmt *sql.Stmt
	touchStmt      *sql.Stmt

	ckpt *checkpointer // SQLite: checkpoints the log off the writer; see checkpoint.go

	closed atomic.Bool
	stmts  stmtCache // long write statements, prepared once
}

// sqlitePragmas are applied to every SQLite connection. WAL lets readers run
// beside the writer; NORMAL synchronous is durable across an application crash
// and loses at most the last commits on a power cut, which WAL keeps
// consistent. busy_timeout only matters when another process holds the lock.
const sqlitePragmas = "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)" +
	"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)"

// OpenSQLite opens (creating if needed) the SQLite database at path and
// migrates it to the latest schema. The folder holding it is created with
// mode 0700 when missing.
//
// It opens two pools over the one file. SQLite allows one writer at a time,
// so writes go through a pool of exactly one connection whose transactions
// begin IMMEDIATE: writers queue in Go rather than failing with SQLITE_BUSY,
// and a transaction never has to upgrade a read lock (the classic deadlock).
// Reads go through a separate read-only pool of several connections, which
// WAL lets run while a write is in progress, so the broker's per-connect
// credential lookup never waits behind a write.
func OpenSQLite(ctx context.Context, path string) (*Store, error) {
	return openSQLite(ctx, path, false)
}

// openSQLite is OpenSQLite; with writerCheckpoints, SQLite's default
// automatic checkpoint in the writer's commits is kept instead of the
// checkpointer (for benchmarks comparing the two).
func openSQLite(ctx context.Context, path string, writerCheckpoints bool) (*Store, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("open sqlite %q: %w: path must be non-empty and contain no '?'", path, ErrInvalid)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	wdsn := path + "?" + sqlitePragmas + "&_txlock=immediate"
	if !writerCheckpoints {
		wdsn += fmt.Sprintf("&_pragma=wal_autocheckpoint(%d)", writerCheckpointPages)
	}
	wdb, err := sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxIdleTime(0)
	wdb.SetConnMaxLifetime(0)

	s := &Store{wdb: wdb, d: sqliteDialect}
	// Migrate before the read pool opens, so that it only ever sees a
	// database in WAL mode with the schema in place.
	if err := s.Migrate(ctx); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}

	if !writerCheckpoints {
		if s.ckpt, err = startCheckpointer(path + "?" + sqlitePragmas); err != nil {
			wdb.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
	}
	rdb, err := sql.Open("sqlite", path+"?"+sqlitePragmas+"&_query_only=1")
	if err != nil {
		s.ckpt.close()
		wdb.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	rdb.SetMaxOpenConns(n)
	rdb.SetMaxIdleConns(n)
	rdb.SetConnMaxIdleTime(0)
	rdb.SetConnMaxLifetime(0)
	s.rdb = rdb
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := s.Ping(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return s, nil
}

// prepare prepares the hot-path statements, once the pools are open.
func (s *Store) prepare(ctx context.Context) error {
	var err error
	s.credentialStmt, err = s.rdb.PrepareContext(ctx,
		s.q(`SELECT credential_hash, decommissioned_at FROM devices WHERE id = ?`))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	s.touchStmt, err = s.wdb.PrepareContext(ctx,
		s.q(`UPDATE devices SET last_seen = ? WHERE id = ? AND decommissioned_at = 0 AND last_seen < ?`))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// Close closes the database. Later calls do nothing and return nil.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var err error
	for _, st := range []*sql.Stmt{s.credentialStmt, s.touchStmt} {
		if st != nil {
			err = errors.Join(err, st.Close())
		}
	}
	err = errors.Join(err, s.stmts.close())
	err = errors.Join(err, s.ckpt.close())
	err = errors.Join(err, s.wdb.Close())
	if s.rdb != nil && s.rdb != s.wdb {
		err = errors.Join(err, s.rdb.Close())
	}
	return err
}

// Ping checks that the database answers on both pools.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.wdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := s.rdb.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// q returns query with its placeholders in the dialect's form.
func (s *Store) q(query string) string { return s.d.rebind(query) }

// inTx runs fn in a write transaction, committing if it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.wdb.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.ckpt.nudge()
	return nil
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}

// nullBytes stores an empty byte slice as NULL.
func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// boolInt stores a bool as INTEGER 0/1: drivers disagree on binding bools.
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// BackupTo writes a consistent copy of the database to path, which must
// not exist, while the store stays in use: SQLite's VACUUM INTO, on the
// writer's connection, so the store's writes wait for the copy (about a
// second per few hundred MB) and none lands half in it. PostgreSQL is backed up with its
// own tools (pg_dump, or the operator's continuous archiving): ErrInvalid.
func (s *Store) BackupTo(ctx context.Context, path string) error {
	if s.d.name != "sqlite" {
		return fmt.Errorf("backup: %w: the %s database is backed up with its own tools (pg_dump)", ErrInvalid, s.d.name)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("backup: %w: %s exists", ErrConflict, path)
	}
	if _, err := s.wdb.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
