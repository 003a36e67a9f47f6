package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Assignment is the release of a model a device is assigned: the release
// repository's target and the bundle's manifest digest, and the revision
// and time of the desired state that last carried it, signed.
type Assignment struct {
	DeviceID string
	Model    string
	Release  uint64
	Target   string
	Digest   string
	Revision uint64
	SignedAt int64 // ms since the epoch; 0: not signed yet
}

const assignmentCols = `device_id, model, release, target, digest, revision, signed_at`

func scanAssignment(r rowScanner) (Assignment, error) {
	var a Assignment
	err := r.Scan(&a.DeviceID, &a.Model, &a.Release, &a.Target, &a.Digest, &a.Revision, &a.SignedAt)
	return a, err
}

// SetAssignment assigns a.Release of a.Model to a.DeviceID, replacing the
// device's assignment of that model; the revision and signing time of the
// one it replaces are kept (the desired state that carried it is still the
// device's latest until it is signed again).
func (s *Store) SetAssignment(ctx context.Context, a Assignment) error {
	if a.DeviceID == "" || a.Model == "" || a.Release == 0 || a.Target == "" || a.Digest == "" {
		return fmt.Errorf("set assignment: %w: device, model, release, target and digest are required", ErrInvalid)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO assignments (`+assignmentCols+`) VALUES (?, ?, ?, ?, ?, 0, 0)
		ON CONFLICT (device_id, model) DO UPDATE SET release = excluded.release, target = excluded.target, digest = excluded.digest`),
		a.DeviceID, a.Model, a.Release, a.Target, a.Digest)
	if err != nil {
		return fmt.Errorf("set assignment %s/%s: %w", a.DeviceID, a.Model, err)
	}
	return nil
}

// RemoveAssignment withdraws device's assignment of model and reports
// whether there was one.
func (s *Store) RemoveAssignment(ctx context.Context, device, model string) (bool, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM assignments WHERE device_id = ? AND model = ?`), device, model)
	if err != nil {
		return false, fmt.Errorf("remove assignment %s/%s: %w", device, model, err)
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// GetAssignment returns device's assignment of model, or ErrNotFound.
func (s *Store) GetAssignment(ctx context.Context, device, model string) (Assignment, error) {
	a, err := scanAssignment(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+assignmentCols+` FROM assignments WHERE device_id = ? AND model = ?`), device, model))
	if errors.Is(err, sql.ErrNoRows) {
		return Assignment{}, fmt.Errorf("assignment %s/%s: %w", device, model, ErrNotFound)
	}
	if err != nil {
		return Assignment{}, fmt.Errorf("assignment %s/%s: %w", device, model, err)
	}
	return a, nil
}

// DeviceAssignments lists device's assignments, by model.
func (s *Store) DeviceAssignments(ctx context.Context, device string) ([]Assignment, error) {
	return s.listAssignments(ctx, `SELECT `+assignmentCols+` FROM assignments WHERE device_id = ? ORDER BY model`, device)
}

func (s *Store) listAssignments(ctx context.Context, q string, args ...any) ([]Assignment, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("assignments: %w", err)
	}
	defer rows.Close()
	var out []Assignment
	for rows.Next() {
		a, err := scanAssignment(rows)
		if err != nil {
			return nil, fmt.Errorf("assignments: %w", err)
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// MarkAssignmentsSigned records that device's desired state of revision
// rev, signed at (ms), carries all its assignments.
func (s *Store) MarkAssignmentsSigned(ctx context.Context, device string, rev uint64, at int64) error {
	_, err := s.wdb.ExecContext(ctx, s.q(`UPDATE assignments SET revision = ?, signed_at = ? WHERE device_id = ?`), rev, at, device)
	if err != nil {
		return fmt.Errorf("mark assignments of %s signed: %w", device, err)
	}
	return nil
}

// AssignedDigests lists, once each, the manifest digests any device is
// assigned, in order.
func (s *Store) AssignedDigests(ctx context.Context) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT DISTINCT digest FROM assignments ORDER BY digest`)
	if err != nil {
		return nil, fmt.Errorf("assigned digests: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("assigned digests: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// AssignedBundle reports whether device is assigned the bundle whose
// manifest digest is digest.
func (s *Store) AssignedBundle(ctx context.Context, device, digest string) (bool, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT 1 FROM assignments WHERE digest = ? AND device_id = ?`), digest, device).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("assigned bundle: %w", err)
	}
	return true, nil
}

// StaleAssignments lists the devices with an assignment signed before
// (ms) and at least once, in order.
func (s *Store) StaleAssignments(ctx context.Context, before int64) ([]string, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT DISTINCT device_id FROM assignments WHERE signed_at > 0 AND signed_at < ? ORDER BY device_id`), before)
	if err != nil {
		return nil, fmt.Errorf("stale assignments: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("stale assignments: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// CountAssignments is the number of assignments held (the one-time import
// of the old file checks it is 0).
func (s *Store) CountAssignments(ctx context.Context) (int, error) {
	var n int
	err := s.rdb.QueryRowContext(ctx, `SELECT COUNT(*) FROM assignments`).Scan(&n)
	return n, err
}
