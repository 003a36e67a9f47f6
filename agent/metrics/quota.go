package metrics

import (
	"context"
	"database/sql"
	"errors"
)

// enforceQuota frees space until need more bytes fit under 90% of the
// quota: oldest records first, then coarsening unsent outbox messages, then
// the oldest outbox messages. Every eviction is counted. It returns the
// bytes in use after.
func (b *Buffer) enforceQuota(ctx context.Context, need int64) (int64, error) {
	limit := b.opt.QuotaBytes * 9 / 10
	for {
		used, err := b.usedBytes(ctx)
		if err != nil || used+need <= limit {
			return used, err
		}
		// The oldest runs, about a thousand records' worth; every record
		// in them is counted.
		k, err := b.evictRuns(ctx, max(1, 1000/maxRunRecords))
		if err != nil {
			return used, err
		}
		if k > 0 {
			b.evictedRecords.Add(uint64(k))
			continue
		}
		b.mu.Lock()
		c, err := b.coarsen(ctx, 64)
		b.mu.Unlock()
		if err != nil {
			return used, err
		}
		if c > 0 {
			continue
		}
		var seq int64
		err = b.db.QueryRowContext(ctx, `SELECT seq FROM outbox ORDER BY seq LIMIT 1`).Scan(&seq)
		if errors.Is(err, sql.ErrNoRows) {
			return used, nil // nothing left to evict
		}
		if err != nil {
			return used, err
		}
		if _, err := b.db.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq); err != nil {
			return used, err
		}
		b.evictedSummaries.Add(1)
	}
}

// EnforceQuota applies the quota now; the writer also applies it when a
// write finds the database full.
func (b *Buffer) EnforceQuota(ctx context.Context) error {
	_, err := b.enforceQuota(ctx, 0)
	return err
}

// evictRuns deletes the oldest rows of runs and returns the records they
// held.
func (b *Buffer) evictRuns(ctx context.Context, rows int) (int64, error) {
	var k sql.NullInt64
	// The count and the delete in one statement's transaction: the
	// records counted are the ones deleted.
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	if err := tx.QueryRowContext(ctx, `SELECT MAX(id), SUM(n) FROM (SELECT id, n FROM runs ORDER BY id LIMIT ?)`, rows).
		Scan(new(sql.NullInt64), &k); err != nil {
		return 0, err
	}
	if !k.Valid {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE id IN (SELECT id FROM runs ORDER BY id LIMIT ?)`, rows); err != nil {
		return 0, err
	}
	return k.Int64, tx.Commit()
}
