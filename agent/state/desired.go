package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Desired returns the accepted desired state's revision and raw bytes; 0 and
// nil when none was accepted yet.
func (d *DB) Desired(ctx context.Context) (uint64, []byte, error) {
	var rev int64
	var raw []byte
	err := d.db.QueryRowContext(ctx, `SELECT revision, raw FROM desired WHERE id = 1`).Scan(&rev, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("read desired state: %w", err)
	}
	return uint64(rev), raw, nil
}

// AcceptDesired stores raw as the desired state of revision rev if rev is
// higher than the one stored, in one transaction. It reports whether it
// stored it; a stale revision changes nothing.
func (d *DB) AcceptDesired(ctx context.Context, rev uint64, raw []byte, now time.Time) (bool, error) {
	if rev == 0 || rev > 1<<63-1 {
		return false, fmt.Errorf("accept desired state: revision %d out of range", rev)
	}
	var stored bool
	err := d.inTx(ctx, func(tx *sql.Tx) error {
		var cur int64
		err := tx.QueryRowContext(ctx, `SELECT revision FROM desired WHERE id = 1`).Scan(&cur)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if uint64(cur) >= rev {
			return nil
		}
		_, err = tx.ExecContext(ctx, `INSERT OR REPLACE INTO desired (id, revision, raw, accepted_at_ms)
			VALUES (1, ?, ?, ?)`, int64(rev), raw, unixMS(now))
		stored = err == nil
		return err
	})
	if err != nil {
		return false, fmt.Errorf("accept desired state: %w", err)
	}
	return stored, nil
}
