package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Rollout is a staged rollout as stored. The store keeps the spec and the
// scheduler's state as opaque text (controlplane/rollout owns their
// meaning); Model, Release, Phase and Stage are copies kept for listing.
type Rollout struct {
	ID      string
	Name    string
	Model   string
	Release uint64
	Spec    []byte // the operator's spec, YAML or JSON, as given
	Phase   string
	Stage   int
	State   []byte // the scheduler's rollout-level state (JSON)
	// Version grows with every save; SaveRollout takes the version read.
	Version   int64
	CreatedBy string
	CreatedAt int64
	UpdatedAt int64
}

// RolloutDevice is one device's part in a rollout.
type RolloutDevice struct {
	RolloutID   string
	DeviceID    string
	Phase       string
	Stage       int
	FromRelease uint64
	State       []byte // the scheduler's state of the device (JSON)
	UpdatedAt   int64
}

// RolloutFilter selects rollouts to list, newest first.
type RolloutFilter struct {
	Model string // "" any
	Phase string // "" any
	Limit int    // ≤ 0: DefaultRolloutLimit
	// Before, when set, lists only rollouts created before this one (keyset
	// pagination: pass the last rollout of a page).
	Before *Rollout
}

// Limits of rollouts.
const (
	DefaultRolloutLimit   = 100
	MaxRolloutSpecBytes   = 256 << 10
	MaxRolloutStateBytes  = 1 << 20
	MaxRolloutDeviceBytes = 16 << 10
	maxRolloutTextBytes   = 256
)

const rolloutCols = `id, name, model, release, spec, phase, stage, state, version, created_by, created_at, updated_at`

func scanRollout(r rowScanner) (Rollout, error) {
	var (
		ro             Rollout
		release, stage int64
		spec, state    string
	)
	if err := r.Scan(&ro.ID, &ro.Name, &ro.Model, &release, &spec, &ro.Phase, &stage, &state, &ro.Version,
		&ro.CreatedBy, &ro.CreatedAt, &ro.UpdatedAt); err != nil {
		return Rollout{}, err
	}
	ro.Release, ro.Stage, ro.Spec, ro.State = uint64(release), int(stage), []byte(spec), []byte(state)
	return ro, nil
}

func validateRollout(r Rollout) error {
	switch {
	case !validName(r.ID, maxTokenIDLen):
		return fmt.Errorf("%w rollout id %q: must be 1 to %d letters, digits or . _ -", ErrInvalid, r.ID, maxTokenIDLen)
	case !validName(r.Model, maxTokenIDLen):
		return fmt.Errorf("%w rollout %s: model %q", ErrInvalid, r.ID, r.Model)
	case r.Release == 0 || r.Release > 1<<63-1:
		return fmt.Errorf("%w rollout %s: release must be in [1, 2^63)", ErrInvalid, r.ID)
	case len(r.Spec) == 0 || len(r.Spec) > MaxRolloutSpecBytes:
		return fmt.Errorf("%w rollout %s: spec must be 1 to %d bytes", ErrInvalid, r.ID, MaxRolloutSpecBytes)
	case len(r.State) == 0 || len(r.State) > MaxRolloutStateBytes:
		return fmt.Errorf("%w rollout %s: state must be 1 to %d bytes", ErrInvalid, r.ID, MaxRolloutStateBytes)
	case r.Phase == "" || len(r.Phase) > maxRolloutTextBytes || len(r.Name) > maxRolloutTextBytes || len(r.CreatedBy) > maxRolloutTextBytes:
		return fmt.Errorf("%w rollout %s: phase required; phase, name and creator at most %d bytes", ErrInvalid, r.ID, maxRolloutTextBytes)
	case r.Stage < 0:
		return fmt.Errorf("%w rollout %s: negative stage", ErrInvalid, r.ID)
	}
	return nil
}

// CreateRollout stores a new rollout at version 1, with audit entries, in
// one transaction. An ID taken gives ErrConflict; nothing is stored then.
func (s *Store) CreateRollout(ctx context.Context, r Rollout, audit ...AuditEntry) (Rollout, error) {
	r.Version = 1
	r.UpdatedAt = r.CreatedAt
	if err := validateRollout(r); err != nil {
		return Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO rollouts (`+rolloutCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			r.ID, r.Name, r.Model, int64(r.Release), string(r.Spec), r.Phase, int64(r.Stage), string(r.State), r.Version,
			r.CreatedBy, r.CreatedAt, r.UpdatedAt)
		if s.d.uniqueViolation(err) {
			return fmt.Errorf("rollout %q: %w", r.ID, ErrConflict)
		}
		if err != nil {
			return err
		}
		return s.appendAuditTx(ctx, tx, audit)
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("create rollout: %w", err)
	}
	return r, nil
}

// Rollout returns one rollout (ErrNotFound when unknown).
func (s *Store) Rollout(ctx context.Context, id string) (Rollout, error) {
	r, err := scanRollout(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+rolloutCols+` FROM rollouts WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Rollout{}, fmt.Errorf("rollout %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Rollout{}, fmt.Errorf("rollout %q: %w", id, err)
	}
	return r, nil
}

// ListRollouts lists rollouts newest first (by creation, then ID).
func (s *Store) ListRollouts(ctx context.Context, f RolloutFilter) ([]Rollout, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultRolloutLimit
	}
	var where []string
	var args []any
	if f.Model != "" {
		where, args = append(where, "model = ?"), append(args, f.Model)
	}
	if f.Phase != "" {
		where, args = append(where, "phase = ?"), append(args, f.Phase)
	}
	if b := f.Before; b != nil {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, b.CreatedAt, b.CreatedAt, b.ID)
	}
	q := `SELECT ` + rolloutCols + ` FROM rollouts`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.rdb.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	defer rows.Close()
	var out []Rollout
	for rows.Next() {
		r, err := scanRollout(rows)
		if err != nil {
			return nil, fmt.Errorf("list rollouts: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list rollouts: %w", err)
	}
	return out, nil
}

// SaveRollout writes a rollout's new phase, stage and state, the device
// rows that changed (inserted or replaced), the removal of the devices in
// remove (those that left the rollout), and audit entries, in one
// transaction. r.Version must be the version read: when another writer
// saved meanwhile the save fails with ErrConflict and changes nothing.
// The returned rollout carries the new version.
func (s *Store) SaveRollout(ctx context.Context, r Rollout, devices []RolloutDevice, remove []string, audit []AuditEntry) (Rollout, error) {
	return s.saveRollout(ctx, s.inTx, r, devices, remove, audit)
}

// SaveRolloutFenced is SaveRollout by the leader of lease name at epoch
// (see FencedTx): it fails with ErrFenced, writing nothing, once a newer
// leader has begun.
func (s *Store) SaveRolloutFenced(ctx context.Context, name string, epoch uint64, r Rollout, devices []RolloutDevice, remove []string, audit []AuditEntry) (Rollout, error) {
	inTx := func(ctx context.Context, fn func(tx *sql.Tx) error) error { return s.FencedTx(ctx, name, epoch, fn) }
	return s.saveRollout(ctx, inTx, r, devices, remove, audit)
}

func (s *Store) saveRollout(ctx context.Context, inTx func(context.Context, func(*sql.Tx) error) error,
	r Rollout, devices []RolloutDevice, remove []string, audit []AuditEntry) (Rollout, error) {
	if err := validateRollout(r); err != nil {
		return Rollout{}, fmt.Errorf("save rollout: %w", err)
	}
	for _, d := range devices {
		if d.RolloutID != r.ID {
			return Rollout{}, fmt.Errorf("save rollout: %w device row of rollout %q in rollout %q", ErrInvalid, d.RolloutID, r.ID)
		}
		if err := ValidateDeviceID(d.DeviceID); err != nil {
			return Rollout{}, fmt.Errorf("save rollout: %w", err)
		}
		if d.Phase == "" || len(d.Phase) > maxRolloutTextBytes || len(d.State) == 0 || len(d.State) > MaxRolloutDeviceBytes || d.Stage < 0 {
			return Rollout{}, fmt.Errorf("save rollout: %w device row %s: phase and a state of at most %d bytes required", ErrInvalid, d.DeviceID, MaxRolloutDeviceBytes)
		}
	}
	for _, e := range audit {
		if err := validateAudit(e); err != nil {
			return Rollout{}, fmt.Errorf("save rollout: %w", err)
		}
	}
	err := inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE rollouts SET phase = ?, stage = ?, state = ?, version = version + 1, updated_at = ?
			WHERE id = ? AND version = ?`), r.Phase, int64(r.Stage), string(r.State), r.UpdatedAt, r.ID, r.Version)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			var v int64
			err := tx.QueryRowContext(ctx, s.q(`SELECT version FROM rollouts WHERE id = ?`), r.ID).Scan(&v)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("rollout %q: %w", r.ID, ErrNotFound)
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("rollout %q: %w: saved at version %d since version %d was read", r.ID, ErrConflict, v, r.Version)
		}
		if len(devices) > 0 {
			stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO rollout_devices (rollout_id, device_id, phase, stage, from_release, state, updated_at)
				VALUES (?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (rollout_id, device_id) DO UPDATE SET phase = excluded.phase, stage = excluded.stage,
					from_release = excluded.from_release, state = excluded.state, updated_at = excluded.updated_at`))
			if err != nil {
				return err
			}
			defer stmt.Close()
			for _, d := range devices {
				if _, err := stmt.ExecContext(ctx, d.RolloutID, d.DeviceID, d.Phase, int64(d.Stage), int64(d.FromRelease), string(d.State), d.UpdatedAt); err != nil {
					return fmt.Errorf("device %s: %w", d.DeviceID, err)
				}
			}
		}
		for _, id := range remove {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM rollout_devices WHERE rollout_id = ? AND device_id = ?`), r.ID, id); err != nil {
				return fmt.Errorf("device %s: %w", id, err)
			}
		}
		return s.appendAuditTx(ctx, tx, audit)
	})
	if err != nil {
		return Rollout{}, fmt.Errorf("save rollout: %w", err)
	}
	r.Version++
	return r, nil
}

// RolloutDevices lists a rollout's device rows by device ID, only those in
// phase when it is not "".
func (s *Store) RolloutDevices(ctx context.Context, rolloutID, phase string) ([]RolloutDevice, error) {
	q, args := `SELECT rollout_id, device_id, phase, stage, from_release, state, updated_at FROM rollout_devices WHERE rollout_id = ?`, []any{rolloutID}
	if phase != "" {
		q += ` AND phase = ?`
		args = append(args, phase)
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(q+` ORDER BY device_id`), args...)
	if err != nil {
		return nil, fmt.Errorf("rollout devices: %w", err)
	}
	defer rows.Close()
	var out []RolloutDevice
	for rows.Next() {
		var (
			d           RolloutDevice
			stage, from int64
			state       string
		)
		if err := rows.Scan(&d.RolloutID, &d.DeviceID, &d.Phase, &stage, &from, &state, &d.UpdatedAt); err != nil {
			return nil, fmt.Errorf("rollout devices: %w", err)
		}
		d.Stage, d.FromRelease, d.State = int(stage), uint64(from), []byte(state)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rollout devices: %w", err)
	}
	return out, nil
}
