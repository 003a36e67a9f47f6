package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
)

// Event is one device event as stored: something notable a device
// reported (an error, a rollback, a restart), keyed by the telemetry
// message that carried it and its position there.
type Event struct {
	DeviceID   string
	Epoch      string
	Sequence   uint64
	Index      int
	AtMs       int64 // the device's clock
	ReceivedAt int64 // the control plane's clock
	Level      string
	Code       string
	Message    string
	Attrs      map[string]string
}

// insertEvents stores the events of the fresh messages, in the
// transaction that recorded them in the ledger.
func (s *Store) insertEvents(ctx context.Context, tx *sql.Tx, msgs []TelemetryMessage, fresh []int) error {
	var q strings.Builder
	var args []any
	n := 0
	flush := func() error {
		if n == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_events (device_id, epoch, sequence, idx, at_ms,
			received_at, level, code, message, attrs) VALUES `+q.String()), args...)
		q.Reset()
		args, n = args[:0], 0
		if err != nil {
			return fmt.Errorf("store events: %w", err)
		}
		return nil
	}
	for _, i := range fresh {
		m := msgs[i]
		for j, e := range m.Events {
			attrs := []byte("{}")
			if len(e.Attrs) > 0 {
				var err error
				if attrs, err = json.Marshal(e.Attrs); err != nil {
					return err
				}
			}
			if n > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, m.DeviceID, m.Epoch, int64(m.Sequence), j, e.AtMs, m.ReceivedAt, e.Level, e.Code,
				e.Message, string(attrs))
			if n++; n == 90 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// EventFilter selects one device's events: those the device dated in
// [FromMs, ToMs) (ToMs 0: no upper bound), at the levels given (none: all),
// newest first, at most Limit (0: 100).
type EventFilter struct {
	DeviceID string
	FromMs   int64
	ToMs     int64
	Levels   []string
	Limit    int
}

// ListEvents returns a device's events matching f, newest first (by the
// device's time, then by the order the device sent them).
func (s *Store) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	if f.DeviceID == "" {
		return nil, fmt.Errorf("%w event filter: a device is required", ErrInvalid)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	where := []string{"device_id = ?", "at_ms >= ?"}
	args := []any{f.DeviceID, f.FromMs}
	if f.ToMs != 0 {
		where = append(where, "at_ms < ?")
		args = append(args, f.ToMs)
	}
	if len(f.Levels) > 0 {
		where = append(where, "level IN (?"+strings.Repeat(", ?", len(f.Levels)-1)+")")
		for _, l := range f.Levels {
			args = append(args, l)
		}
	}
	args = append(args, f.Limit)
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT epoch, sequence, idx, at_ms, received_at, level, code, message, attrs
		FROM device_events WHERE `+strings.Join(where, " AND ")+`
		ORDER BY at_ms DESC, epoch DESC, sequence DESC, idx DESC LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e := Event{DeviceID: f.DeviceID}
		var seq int64
		var attrs string
		if err := rows.Scan(&e.Epoch, &seq, &e.Index, &e.AtMs, &e.ReceivedAt, &e.Level, &e.Code, &e.Message, &attrs); err != nil {
			return nil, err
		}
		e.Sequence = uint64(seq)
		if attrs != "{}" && attrs != "" {
			if err := json.Unmarshal([]byte(attrs), &e.Attrs); err != nil {
				return nil, fmt.Errorf("list events: attrs of %s/%d: %w", e.Epoch, seq, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// TelemetryModels lists the models with summaries or rollups whose windows
// start in [fromMs, toMs), of one device when deviceID is set.
func (s *Store) TelemetryModels(ctx context.Context, deviceID string, fromMs, toMs int64) ([]string, error) {
	dev, args := "", []any{fromMs, toMs}
	if deviceID != "" {
		dev = " AND device_id = ?"
		args = append(args, deviceID)
	}
	args = append(args, args...)
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT DISTINCT model FROM telemetry_summaries
		WHERE start_ms >= ? AND start_ms < ?`+dev+`
		UNION SELECT DISTINCT model FROM telemetry_rollups WHERE bucket_start >= ? AND bucket_start < ?`+dev+`
		ORDER BY model`), args...)
	if err != nil {
		return nil, fmt.Errorf("telemetry models: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var m string
		if err := rows.Scan(&m); err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, rows.Err()
}
