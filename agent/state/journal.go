package state

import (
	"context"
	"fmt"
	"time"
)

// journalKeep is how many events the journal keeps; older ones are deleted
// as new ones arrive.
const journalKeep = 1000

// Event is one journal entry.
type Event struct {
	At      time.Time
	Level   string // "info", "warn", "error"
	Code    string // stable, machine-readable, e.g. "enrol.ok"
	Message string
}

// Record appends an event to the journal, dropping the oldest beyond
// journalKeep.
func (d *DB) Record(ctx context.Context, e Event) error {
	res, err := d.db.ExecContext(ctx, `INSERT INTO journal (at_ms, level, code, message) VALUES (?, ?, ?, ?)`,
		unixMS(e.At), e.Level, e.Code, e.Message)
	if err != nil {
		return fmt.Errorf("journal: %w", err)
	}
	if seq, err := res.LastInsertId(); err == nil && seq > journalKeep {
		if _, err := d.db.ExecContext(ctx, `DELETE FROM journal WHERE seq <= ?`, seq-journalKeep); err != nil {
			return fmt.Errorf("journal: trim: %w", err)
		}
	}
	return nil
}

// Recent returns up to n of the newest events, newest first.
func (d *DB) Recent(ctx context.Context, n int) ([]Event, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT at_ms, level, code, message FROM journal ORDER BY seq DESC LIMIT ?`, n)
	if err != nil {
		return nil, fmt.Errorf("journal: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var at int64
		if err := rows.Scan(&at, &e.Level, &e.Code, &e.Message); err != nil {
			return nil, fmt.Errorf("journal: %w", err)
		}
		e.At = time.UnixMilli(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
