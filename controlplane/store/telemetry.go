package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
)

// TelemetryMessage is one device telemetry message's window summaries or
// events, to be stored once per (device, epoch, sequence).
type TelemetryMessage struct {
	DeviceID   string
	Epoch      string
	Sequence   uint64
	ReceivedAt int64
	Summaries  []StoredSummary
	Events     []Event
}

// StoredSummary is one window summary as stored: the fields queries filter
// on, and the encoded flotilla.v1.WindowSummary.
type StoredSummary struct {
	DeviceID string
	Epoch    string
	Sequence uint64
	Index    int
	Model    string
	Release  uint64
	Slot     string
	StartMs  int64
	EndMs    int64
	Requests uint64
	Errors   uint64
	Payload  []byte
}

// Rollup granularities.
const (
	Hourly = "h"
	Daily  = "d"
)

// Rollup is the merge of one device's summaries of a model release whose
// windows start within one hour or day.
type Rollup struct {
	Granularity string
	DeviceID    string
	Model       string
	Release     uint64
	BucketStart int64
	Payload     []byte
}

// RollupKey names a rollup bucket. Marks, for a dirty bucket, counts the
// summaries that marked it: PutRollups clears the mark only if no summary
// marked it since it was read.
type RollupKey struct {
	DeviceID    string
	Model       string
	Release     uint64
	BucketStart int64
	Marks       int64
}

// BucketSize is a granularity's bucket length in milliseconds.
func BucketSize(g string) int64 {
	if g == Daily {
		return 24 * 3600 * 1000
	}
	return 3600 * 1000
}

// StoreTelemetry stores messages in one transaction. dup[i] is true when
// message i was stored before (its summaries are not stored again). A
// summary landing in a bucket already rolled up marks that bucket dirty.
func (s *Store) StoreTelemetry(ctx context.Context, msgs []TelemetryMessage) (dup []bool, err error) {
	// The full-size multi-row INSERTs, prepared once (before the
	// transaction: the writer pool's one connection is the transaction's).
	if s.stmts.off {
		// benchmarks of the path before
	} else if len(msgs) >= summariesPerInsert {
		if err := s.stmts.prepare(ctx, s.wdb, sumSQL, s.q(summariesInsert(summariesPerInsert))); err != nil {
			return nil, fmt.Errorf("store telemetry: %w", err)
		}
	}
	if len(msgs) >= receivedPerInsert && !s.stmts.off {
		if err := s.stmts.prepare(ctx, s.wdb, recvSQL, s.q(receivedInsert(receivedPerInsert))); err != nil {
			return nil, fmt.Errorf("store telemetry: %w", err)
		}
	}
	dup = make([]bool, len(msgs))
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		marks := map[string]int64{}
		// Below a granularity's watermark, or the buckets a running rollup
		// claimed, a summary marks its bucket dirty. (PostgreSQL: the row
		// lock orders this with ClaimRollup.)
		rows, err := tx.QueryContext(ctx, `SELECT granularity, watermark, claimed FROM telemetry_rollup_state`+s.d.forUpdate)
		if err != nil {
			return err
		}
		for rows.Next() {
			var g string
			var w, c int64
			if err := rows.Scan(&g, &w, &c); err != nil {
				rows.Close()
				return err
			}
			marks[g] = max(w, c)
		}
		rows.Close()
		// Multi-row statements: one round through the driver per chunk
		// rather than per row. RETURNING (SQLite ≥ 3.35, PostgreSQL) names
		// the messages that were new.
		type mkey struct {
			device, epoch string
			seq           int64
		}
		first := make(map[mkey]int, len(msgs))
		for i, m := range msgs {
			k := mkey{m.DeviceID, m.Epoch, int64(m.Sequence)}
			if _, ok := first[k]; ok {
				dup[i] = true // the same message twice in one batch
				continue
			}
			first[k] = i
		}
		const chunk = receivedPerInsert
		var fresh []int
		for lo := 0; lo < len(msgs); lo += chunk {
			var args []any
			var idx []int
			for i := lo; i < min(lo+chunk, len(msgs)); i++ {
				if dup[i] {
					continue
				}
				m := msgs[i]
				args = append(args, m.DeviceID, m.Epoch, int64(m.Sequence), m.ReceivedAt)
				idx = append(idx, i)
			}
			if len(idx) == 0 {
				continue
			}
			var rows *sql.Rows
			var err error
			if st := s.stmts.get(recvSQL); len(idx) == receivedPerInsert && st != nil {
				rows, err = tx.StmtContext(ctx, st).QueryContext(ctx, args...)
			} else {
				rows, err = tx.QueryContext(ctx, s.q(receivedInsert(len(idx))), args...)
			}
			if err != nil {
				return fmt.Errorf("store telemetry: %w", err)
			}
			inserted := map[int]bool{}
			for rows.Next() {
				var k mkey
				if err := rows.Scan(&k.device, &k.epoch, &k.seq); err != nil {
					rows.Close()
					return err
				}
				inserted[first[k]] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, i := range idx {
				if inserted[i] {
					fresh = append(fresh, i)
				} else {
					dup[i] = true
				}
			}
		}
		var args []any
		n := 0
		flush := func() error {
			if n == 0 {
				return nil
			}
			var err error
			if st := s.stmts.get(sumSQL); n == summariesPerInsert && st != nil {
				_, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
			} else {
				_, err = tx.ExecContext(ctx, s.q(summariesInsert(n)), args...)
			}
			args, n = args[:0], 0
			if err != nil {
				return fmt.Errorf("store telemetry: %w", err)
			}
			return nil
		}
		for _, i := range fresh {
			m := msgs[i]
			for j, sm := range m.Summaries {
				args = append(args, m.DeviceID, m.Epoch, int64(m.Sequence), j, sm.Model, int64(sm.Release),
					sm.Slot, sm.StartMs, sm.EndMs, int64(sm.Requests), int64(sm.Errors), sm.Payload)
				if n++; n == summariesPerInsert {
					if err := flush(); err != nil {
						return err
					}
				}
				for g, w := range marks {
					if sm.StartMs < w {
						b := sm.StartMs - sm.StartMs%BucketSize(g)
						if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO telemetry_rollup_dirty
							(granularity, device_id, model, release, bucket_start) VALUES (?, ?, ?, ?, ?)
							ON CONFLICT (granularity, device_id, model, release, bucket_start)
							DO UPDATE SET marks = telemetry_rollup_dirty.marks + 1`),
							g, m.DeviceID, sm.Model, int64(sm.Release), b); err != nil {
							return err
						}
					}
				}
			}
		}
		if err := flush(); err != nil {
			return err
		}
		return s.insertEvents(ctx, tx, msgs, fresh)
	})
	return dup, err
}

// Rows per multi-row INSERT: one round through the driver per chunk
// rather than per row; the full-size statements are prepared once.
const (
	receivedPerInsert  = 200
	summariesPerInsert = 80
	recvSQL            = "telemetry_received insert"
	sumSQL             = "telemetry_summaries insert"
)

// receivedInsert inserts n messages into the de-duplication ledger and
// returns those that were new (RETURNING: SQLite ≥ 3.35, PostgreSQL).
func receivedInsert(n int) string {
	return `INSERT INTO telemetry_received (device_id, epoch, sequence, received_at) VALUES ` +
		strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?), ", n), ", ") +
		` ON CONFLICT (device_id, epoch, sequence) DO NOTHING RETURNING device_id, epoch, sequence`
}

// summariesInsert inserts n summaries.
func summariesInsert(n int) string {
	return `INSERT INTO telemetry_summaries (device_id, epoch, sequence, idx, model, release, slot, start_ms, end_ms,
		requests, errors, payload) VALUES ` + strings.TrimSuffix(strings.Repeat("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?), ", n), ", ")
}

// SummaryFilter selects stored summaries or rollups: one model, optionally
// one release, windows starting in [FromMs, ToMs), of one device, of the
// devices whose labels match Selector (a cohort), or of every device.
type SummaryFilter struct {
	Model    string
	Release  uint64 // 0: any
	DeviceID string
	Selector map[string]string
	FromMs   int64
	ToMs     int64
}

func (s *Store) filterSQL(f SummaryFilter, timeCol string) (string, []any, error) {
	if f.Model == "" || f.ToMs <= f.FromMs {
		return "", nil, fmt.Errorf("%w summary filter: a model and a non-empty time range are required", ErrInvalid)
	}
	where := []string{"model = ?", timeCol + " >= ?", timeCol + " < ?"}
	args := []any{f.Model, f.FromMs, f.ToMs}
	if f.Release > 0 {
		where = append(where, "release = ?")
		args = append(args, int64(f.Release))
	}
	if f.DeviceID != "" {
		where = append(where, "device_id = ?")
		args = append(args, f.DeviceID)
	}
	if err := ValidateLabels(f.Selector); err != nil {
		return "", nil, err
	}
	keys := make([]string, 0, len(f.Selector))
	for k := range f.Selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		where = append(where, "device_id IN (SELECT device_id FROM device_labels WHERE label_key = ? AND label_value = ?)")
		args = append(args, k, f.Selector[k])
	}
	return strings.Join(where, " AND "), args, nil
}

// ListSummaries returns the stored summaries matching f, each device's in
// (epoch, sequence) order.
func (s *Store) ListSummaries(ctx context.Context, f SummaryFilter) ([]StoredSummary, error) {
	where, args, err := s.filterSQL(f, "start_ms")
	if err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT device_id, epoch, sequence, idx, model, release, slot, start_ms,
		end_ms, requests, errors, payload FROM telemetry_summaries WHERE `+where+
		` ORDER BY device_id, epoch, sequence, idx`), args...)
	if err != nil {
		return nil, fmt.Errorf("list summaries: %w", err)
	}
	defer rows.Close()
	var out []StoredSummary
	for rows.Next() {
		var m StoredSummary
		var seq, rel, req, errs int64
		if err := rows.Scan(&m.DeviceID, &m.Epoch, &seq, &m.Index, &m.Model, &rel, &m.Slot, &m.StartMs, &m.EndMs,
			&req, &errs, &m.Payload); err != nil {
			return nil, err
		}
		m.Sequence, m.Release, m.Requests, m.Errors = uint64(seq), uint64(rel), uint64(req), uint64(errs)
		out = append(out, m)
	}
	return out, rows.Err()
}

// ListRollups returns the rollups of granularity g matching f (FromMs and
// ToMs bound the bucket start), by device and bucket.
func (s *Store) ListRollups(ctx context.Context, g string, f SummaryFilter) ([]Rollup, error) {
	where, args, err := s.filterSQL(f, "bucket_start")
	if err != nil {
		return nil, err
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT device_id, model, release, bucket_start, payload
		FROM telemetry_rollups WHERE granularity = ? AND `+where+` ORDER BY device_id, bucket_start`),
		append([]any{g}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("list rollups: %w", err)
	}
	defer rows.Close()
	var out []Rollup
	for rows.Next() {
		r := Rollup{Granularity: g}
		var rel int64
		if err := rows.Scan(&r.DeviceID, &r.Model, &rel, &r.BucketStart, &r.Payload); err != nil {
			return nil, err
		}
		r.Release = uint64(rel)
		out = append(out, r)
	}
	return out, rows.Err()
}

// RollupState returns how far granularity g is rolled up, and the dirty
// buckets before that point.
func (s *Store) RollupState(ctx context.Context, g string) (watermark int64, dirty []RollupKey, err error) {
	err = s.wdb.QueryRowContext(ctx, s.q(`SELECT watermark FROM telemetry_rollup_state WHERE granularity = ?`), g).Scan(&watermark)
	if err == sql.ErrNoRows {
		err = nil
	}
	if err != nil {
		return 0, nil, fmt.Errorf("rollup state: %w", err)
	}
	rows, err := s.wdb.QueryContext(ctx, s.q(`SELECT device_id, model, release, bucket_start, marks FROM telemetry_rollup_dirty
		WHERE granularity = ? ORDER BY bucket_start, device_id`), g)
	if err != nil {
		return 0, nil, fmt.Errorf("rollup state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k RollupKey
		var rel int64
		if err := rows.Scan(&k.DeviceID, &k.Model, &rel, &k.BucketStart, &k.Marks); err != nil {
			return 0, nil, err
		}
		k.Release = uint64(rel)
		dirty = append(dirty, k)
	}
	return watermark, dirty, rows.Err()
}

// PutRollups writes rollups of granularity g (replacing those of the same
// bucket), clears the dirty buckets cleaned (those no summary marked again
// since RollupState read them), and moves the watermark forward to
// watermark, in one transaction.
func (s *Store) PutRollups(ctx context.Context, g string, rollups []Rollup, cleaned []RollupKey, watermark int64) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		for _, r := range rollups {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO telemetry_rollups
				(granularity, device_id, model, release, bucket_start, payload) VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (granularity, model, release, bucket_start, device_id) DO UPDATE SET payload = excluded.payload`),
				g, r.DeviceID, r.Model, int64(r.Release), r.BucketStart, r.Payload); err != nil {
				return fmt.Errorf("put rollups: %w", err)
			}
		}
		for _, k := range cleaned {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM telemetry_rollup_dirty WHERE granularity = ? AND device_id = ?
				AND model = ? AND release = ? AND bucket_start = ? AND marks = ?`),
				g, k.DeviceID, k.Model, int64(k.Release), k.BucketStart, k.Marks); err != nil {
				return err
			}
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO telemetry_rollup_state (granularity, watermark) VALUES (?, ?)
			ON CONFLICT (granularity) DO UPDATE SET watermark = excluded.watermark
			WHERE telemetry_rollup_state.watermark < excluded.watermark`), g, watermark)
		return err
	})
}

// ClaimRollup says a rollup of granularity g up to upTo is about to read
// the summaries: from its commit on, a summary stored for a bucket before
// upTo marks the bucket dirty even while the watermark is still below it,
// so nothing stored during the rollup is left out of it unnoticed.
func (s *Store) ClaimRollup(ctx context.Context, g string, upTo int64) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO telemetry_rollup_state (granularity, watermark, claimed) VALUES (?, 0, ?)
			ON CONFLICT (granularity) DO UPDATE SET claimed = excluded.claimed
			WHERE telemetry_rollup_state.claimed < excluded.claimed`), g, upTo)
		if err != nil {
			return fmt.Errorf("claim rollup: %w", err)
		}
		return nil
	})
}

// TelemetryRetention says how long each kind of telemetry row is kept, as
// cut-off times in milliseconds: rows before them are deleted.
type TelemetryRetention struct {
	RawBefore, HourlyBefore, DailyBefore int64
	EventsBefore                         int64 // by the time the control plane received them
}

// DeleteTelemetryBefore deletes raw summaries (and their de-duplication
// ledger), rollups and device events older than the cut-offs; it returns
// the rows deleted.
func (s *Store) DeleteTelemetryBefore(ctx context.Context, r TelemetryRetention) (int64, error) {
	var total int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, st := range []struct {
			q   string
			arg []any
		}{
			{`DELETE FROM telemetry_summaries WHERE start_ms < ?`, []any{r.RawBefore}},
			{`DELETE FROM telemetry_received WHERE received_at < ?`, []any{r.RawBefore}},
			{`DELETE FROM telemetry_rollups WHERE granularity = ? AND bucket_start < ?`, []any{Hourly, r.HourlyBefore}},
			{`DELETE FROM telemetry_rollups WHERE granularity = ? AND bucket_start < ?`, []any{Daily, r.DailyBefore}},
			{`DELETE FROM device_events WHERE received_at < ?`, []any{r.EventsBefore}},
		} {
			res, err := tx.ExecContext(ctx, s.q(st.q), st.arg...)
			if err != nil {
				return fmt.Errorf("telemetry retention: %w", err)
			}
			n, _ := res.RowsAffected()
			total += n
		}
		return nil
	})
	return total, err
}

// SummariesBetween returns every stored summary of any model whose window
// starts in [fromMs, toMs), for the rollup job.
func (s *Store) SummariesBetween(ctx context.Context, fromMs, toMs int64) ([]StoredSummary, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT device_id, epoch, sequence, idx, model, release, slot, start_ms,
		end_ms, requests, errors, payload FROM telemetry_summaries WHERE start_ms >= ? AND start_ms < ?
		ORDER BY device_id, epoch, sequence, idx`), fromMs, toMs)
	if err != nil {
		return nil, fmt.Errorf("summaries between: %w", err)
	}
	defer rows.Close()
	var out []StoredSummary
	for rows.Next() {
		var m StoredSummary
		var seq, rel, req, errs int64
		if err := rows.Scan(&m.DeviceID, &m.Epoch, &seq, &m.Index, &m.Model, &rel, &m.Slot, &m.StartMs, &m.EndMs,
			&req, &errs, &m.Payload); err != nil {
			return nil, err
		}
		m.Sequence, m.Release, m.Requests, m.Errors = uint64(seq), uint64(rel), uint64(req), uint64(errs)
		out = append(out, m)
	}
	return out, rows.Err()
}

// OldestSummaryStart is the earliest stored window start, and false when
// there is none.
func (s *Store) OldestSummaryStart(ctx context.Context) (int64, bool, error) {
	var v sql.NullInt64
	if err := s.rdb.QueryRowContext(ctx, `SELECT MIN(start_ms) FROM telemetry_summaries`).Scan(&v); err != nil {
		return 0, false, fmt.Errorf("oldest summary: %w", err)
	}
	return v.Int64, v.Valid, nil
}
