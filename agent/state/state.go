// Package state is the agent's local, durable state: an SQLite database
// (DataDir/agent.db) holding the device's identity and broker credentials,
// the desired state it accepted last, the telemetry epoch and a short event
// journal; and the device's ed25519 private key in DataDir/device.key.
//
// The data folder is created with mode 0700 and the key file with 0600,
// written atomically (temporary file, fsync, rename, fsync of the folder),
// so a power cut leaves either the old file or the new one. The database is
// in WAL mode and its schema is versioned by the embedded migrations/ files;
// a database from a newer agent is refused with ErrSchemaTooNew.
package state

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Errors callers branch on with errors.Is.
var (
	ErrNotEnrolled  = errors.New("device is not enrolled")
	ErrSchemaTooNew = errors.New("agent database schema is newer than this agent")
)

// DBFile and KeyFile are the names of the state files in the data folder.
const (
	DBFile  = "agent.db"
	KeyFile = "device.key"
)

// pragmas apply to every connection: WAL so a crash never corrupts, NORMAL
// sync (durable across a process crash, WAL-consistent on power loss), and a
// busy timeout for a diagnostics reader in another process.
const pragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)&_txlock=immediate"

// DB is the agent's state database. It is safe for concurrent use.
type DB struct {
	db    *sql.DB
	dir   string
	epoch string
}

// Open opens (creating if needed) the state in the data folder dir and
// migrates it to the latest schema.
func Open(ctx context.Context, dir string) (*DB, error) {
	if dir == "" {
		return nil, errors.New("open state: data folder is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	path := filepath.Join(dir, DBFile)
	return open(ctx, dir, path, "file:"+path+"?"+pragmas)
}

// OpenMemory opens a state database held in memory, for agent/sim only:
// the same schema, migrations and queries as Open, but nothing survives
// Close and no file is held open, so thousands of simulated agents fit in
// one process's open-files limit. The key file is still written in dir.
func OpenMemory(ctx context.Context, dir string) (*DB, error) {
	if dir == "" {
		return nil, errors.New("open state: data folder is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open state: %w", err)
	}
	// A private in-memory database per connection: the pool below keeps
	// exactly one, forever.
	return open(ctx, dir, "memory", "file::memory:?"+pragmas)
}

func open(ctx context.Context, dir, path, dsn string) (*DB, error) {
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	// One connection: the agent writes little, and one writer never meets
	// SQLITE_BUSY from itself.
	sdb.SetMaxOpenConns(1)
	sdb.SetMaxIdleConns(1)
	sdb.SetConnMaxIdleTime(0)
	sdb.SetConnMaxLifetime(0)
	d := &DB{db: sdb, dir: dir}
	if err := d.migrate(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	if err := d.loadEpoch(ctx); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return d, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Dir returns the data folder.
func (d *DB) Dir() string { return d.dir }

// Epoch returns the telemetry epoch: random, made when the database was
// created, so sequence numbers that restart with a new database are not
// taken for duplicates.
func (d *DB) Epoch() string { return d.epoch }

func (d *DB) loadEpoch(ctx context.Context) error {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	// INSERT OR IGNORE keeps the epoch of an existing database.
	if _, err := d.db.ExecContext(ctx, `INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?)`, hex.EncodeToString(b)); err != nil {
		return fmt.Errorf("epoch: %w", err)
	}
	return d.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'epoch'`).Scan(&d.epoch)
}

// inTx runs fn in a write transaction, committing if it returns nil.
func (d *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
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
	return nil
}

func unixMS(t time.Time) int64 { return t.UnixMilli() }
