package state

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
)

// OpenReadOnly opens the state in dir for reading only, for diagnostics
// while the agent is stopped (or running: WAL lets a reader in beside the
// writer). It creates nothing and migrates nothing: a missing database is
// an error wrapping os.ErrNotExist, and one whose schema is newer than this
// binary knows is refused with ErrSchemaTooNew. Writes through the
// returned DB fail.
func OpenReadOnly(ctx context.Context, dir string) (*DB, error) {
	path := filepath.Join(dir, DBFile)
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open state read-only: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open state read-only: %s is not a regular file", path)
	}
	u := url.URL{Scheme: "file", Path: path, RawQuery: "mode=ro&_pragma=busy_timeout(5000)&_pragma=query_only(1)"}
	sdb, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open state read-only %s: %w", path, err)
	}
	sdb.SetMaxOpenConns(1)
	d := &DB{db: sdb, dir: dir}
	v, err := d.SchemaVersion(ctx)
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("open state read-only %s: %w", path, err)
	}
	migs, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		sdb.Close()
		return nil, err
	}
	if v > len(migs) {
		sdb.Close()
		return nil, fmt.Errorf("open state read-only %s: %w (schema %d, this agent knows %d)", path, ErrSchemaTooNew, v, len(migs))
	}
	err = sdb.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'epoch'`).Scan(&d.epoch)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		sdb.Close()
		return nil, fmt.Errorf("open state read-only %s: %w", path, err)
	}
	return d, nil
}

// LoadKey returns the device's private key from dir/device.key without
// creating one: for signing what the device vouches for (support
// bundles) when the agent may not be running. A missing key is an error
// wrapping os.ErrNotExist.
func LoadKey(dir string) (ed25519.PrivateKey, error) {
	f, err := os.Open(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("device key: %w", err)
	}
	return parseKey(b)
}
