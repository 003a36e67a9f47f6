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
		res, err := b.db.ExecContext(ctx, `DELETE FROM records WHERE id IN (SELECT id FROM records ORDER BY id LIMIT 1000)`)
		if err != nil {
			return used, err
		}
		if k, _ := res.RowsAffected(); k > 0 {
			b.evictedRecords.Add(uint64(k))
			continue
		}
		b.mu.Lock()
		k, err := b.coarsen(ctx, 64)
		b.mu.Unlock()
		if err != nil {
			return used, err
		}
		if k > 0 {
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
