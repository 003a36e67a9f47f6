package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// ModelSlot is one release in one of a model's A/B slots.
type ModelSlot struct {
	Slot     string // "a" or "b"; empty when there is none
	Release  uint64
	Version  string
	Digest   string // lowercase hex SHA-256 of Manifest
	Manifest []byte // the encoded flotilla.v1.BundleManifest
}

// Empty reports whether the slot reference names nothing.
func (s ModelSlot) Empty() bool { return s.Slot == "" }

// ModelRecord is the durable lifecycle state of one model. agent/lifecycle
// owns its meaning; this package only keeps it.
type ModelRecord struct {
	Name           string
	Phase          string
	Active         ModelSlot
	Previous       ModelSlot // the rollback target while Active is on probation
	Candidate      ModelSlot // staged, not yet switched to
	ProbationStart time.Time
	Attempts       int // activations of Candidate begun, to stop a crash loop
	RejectedDigest string
	RejectedRel    uint64
	RejectedReason string
	Health         string
	LastError      string
	Rollbacks      uint64
	UpdatedAt      time.Time
}

const modelColumns = `name, phase,
	active_slot, active_release, active_version, active_digest, active_manifest,
	previous_slot, previous_release, previous_version, previous_digest, previous_manifest,
	candidate_slot, candidate_release, candidate_version, candidate_digest, candidate_manifest,
	probation_start_ms, attempts, rejected_digest, rejected_release, rejected_reason,
	health, last_error, rollbacks, updated_at_ms`

// Models returns every model's record, sorted by name.
func (d *DB) Models(ctx context.Context) ([]ModelRecord, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT `+modelColumns+` FROM models ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("models: %w", err)
	}
	defer rows.Close()
	var out []ModelRecord
	for rows.Next() {
		var r ModelRecord
		var start, updated int64
		slots := []*ModelSlot{&r.Active, &r.Previous, &r.Candidate}
		dest := []any{&r.Name, &r.Phase}
		for _, s := range slots {
			dest = append(dest, &s.Slot, &s.Release, &s.Version, &s.Digest, &s.Manifest)
		}
		dest = append(dest, &start, &r.Attempts, &r.RejectedDigest, &r.RejectedRel, &r.RejectedReason,
			&r.Health, &r.LastError, &r.Rollbacks, &updated)
		if err := rows.Scan(dest...); err != nil {
			return nil, fmt.Errorf("models: %w", err)
		}
		if start != 0 {
			r.ProbationStart = time.UnixMilli(start)
		}
		r.UpdatedAt = time.UnixMilli(updated)
		out = append(out, r)
	}
	return out, rows.Err()
}

// SaveModel writes rec and appends ev to the journal in one transaction:
// after a crash either both are there or neither is.
func (d *DB) SaveModel(ctx context.Context, rec ModelRecord, ev Event) error {
	if rec.Name == "" || rec.Phase == "" {
		return fmt.Errorf("save model: name and phase are required")
	}
	if rec.UpdatedAt.IsZero() {
		rec.UpdatedAt = time.Now()
	}
	var start int64
	if !rec.ProbationStart.IsZero() {
		start = unixMS(rec.ProbationStart)
	}
	args := []any{rec.Name, rec.Phase}
	for _, s := range []ModelSlot{rec.Active, rec.Previous, rec.Candidate} {
		args = append(args, s.Slot, s.Release, s.Version, s.Digest, s.Manifest)
	}
	args = append(args, start, rec.Attempts, rec.RejectedDigest, rec.RejectedRel, rec.RejectedReason,
		rec.Health, rec.LastError, rec.Rollbacks, unixMS(rec.UpdatedAt))
	return d.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO models (`+modelColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...); err != nil {
			return fmt.Errorf("save model %s: %w", rec.Name, err)
		}
		if ev.Code == "" {
			return nil
		}
		if ev.At.IsZero() {
			ev.At = rec.UpdatedAt
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO journal (at_ms, level, code, message) VALUES (?, ?, ?, ?)`,
			unixMS(ev.At), ev.Level, ev.Code, ev.Message); err != nil {
			return fmt.Errorf("save model %s: journal: %w", rec.Name, err)
		}
		return nil
	})
}

// DeleteModel forgets a model.
func (d *DB) DeleteModel(ctx context.Context, name string) error {
	if _, err := d.db.ExecContext(ctx, `DELETE FROM models WHERE name = ?`, name); err != nil {
		return fmt.Errorf("delete model %s: %w", name, err)
	}
	return nil
}
