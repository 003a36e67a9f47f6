package metrics

import (
	"context"
	"database/sql"
	"time"
)

// migrateRecords packs the records a database written before runs still
// holds (one row per record, table records) into runs, and drops the old
// table, in one transaction: after a crash either the old table or the
// runs are there, never both nor neither.
func (b *Buffer) migrateRecords(ctx context.Context) error {
	var n int
	if err := b.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'records'`).
		Scan(&n); err != nil || n == 0 {
		return err
	}
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT at_ms, model, release, version, slot, latency_us, ok, features, prediction
		FROM records ORDER BY id`)
	if err != nil {
		return err
	}
	var batch []Record
	for rows.Next() {
		var (
			at, rel, lat, ok int64
			model, ver, slot string
			blob             []byte
			pred             sql.NullFloat64
		)
		if err := rows.Scan(&at, &model, &rel, &ver, &slot, &lat, &ok, &blob, &pred); err != nil {
			rows.Close()
			return err
		}
		r := Record{Model: model, Release: uint64(rel), Version: ver, Slot: slot, At: time.UnixMilli(at),
			Latency: time.Duration(lat) * time.Microsecond, OK: ok != 0, Predicted: pred.Float64, HasPrediction: pred.Valid}
		if f, m, err := decodeFeatures(blob); err == nil {
			r.Features, r.Missing = f, m
		} // a damaged blob: the record still counts, without features
		batch = append(batch, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var p packer
	p.window = b.opt.Window.Milliseconds()
	p.reset()
	for i := range batch {
		p.add(&batch[i])
	}
	stmt := tx.StmtContext(ctx, b.runStmt)
	for _, ru := range p.runs[:p.open] {
		k := &ru.key
		if _, err := stmt.ExecContext(ctx, k.model, int64(k.release), k.version, k.slot, k.window,
			ru.minAt, ru.maxAt, ru.n, ru.data); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `DROP TABLE records`); err != nil {
		return err
	}
	return tx.Commit()
}
