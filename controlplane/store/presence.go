package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The methods here record what the broker and telemetry ingest learn about
// an active device. On a decommissioned or unknown device they return
// ErrNotFound and change nothing.

// RecordBirth records a device's birth message: its facts and versions, and
// LastSeen = max(LastSeen, at). A birth older than the newest one recorded is
// ignored, so a late retained message cannot overwrite newer facts.
func (s *Store) RecordBirth(ctx context.Context, id string, facts []byte, agentVersion string, protocolVersion uint32, at int64) error {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE devices SET facts = ?, agent_version = ?, protocol_version = ?,
			birth_at = ?, last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END
		WHERE id = ? AND decommissioned_at = 0 AND birth_at <= ?`),
		nullBytes(facts), agentVersion, int64(protocolVersion), at, at, at, id, at)
	if err != nil {
		return fmt.Errorf("record birth of %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	if err := s.checkActive(ctx, id); err != nil {
		return fmt.Errorf("record birth of %q: %w", id, err)
	}
	return nil // an older birth
}

// SetStatus records a device's online status as reported at time at, and
// LastSeen = max(LastSeen, at). A report older than the newest one applied
// (StatusChangedAt) is ignored: retained and last-will messages can arrive
// out of order. changed reports whether Online flipped.
func (s *Store) SetStatus(ctx context.Context, id string, online bool, at int64) (changed bool, err error) {
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var was, changedAt int64
		err := tx.QueryRowContext(ctx, s.q(`SELECT online, status_changed_at FROM devices
			WHERE id = ? AND decommissioned_at = 0`+s.d.forUpdate), id).Scan(&was, &changedAt)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if at < changedAt {
			_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET last_seen = ? WHERE id = ? AND last_seen < ?`), at, id, at)
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE devices SET online = ?, status_changed_at = ?,
				last_seen = CASE WHEN last_seen < ? THEN ? ELSE last_seen END
			WHERE id = ?`), boolInt(online), at, at, at, id)
		changed = (was != 0) != online
		return err
	})
	if err != nil {
		return false, fmt.Errorf("set status of %q: %w", id, err)
	}
	return changed, nil
}

// Touch sets LastSeen = max(LastSeen, at). It is one indexed UPDATE that
// writes nothing when LastSeen is already as new, for heartbeats.
func (s *Store) Touch(ctx context.Context, id string, at int64) error {
	res, err := s.touchStmt.ExecContext(ctx, at, id, at)
	if err != nil {
		return fmt.Errorf("touch %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 1 {
		return err
	}
	if err := s.checkActive(ctx, id); err != nil {
		return fmt.Errorf("touch %q: %w", id, err)
	}
	return nil
}

// checkActive returns ErrNotFound unless id is an active device.
func (s *Store) checkActive(ctx context.Context, id string) error {
	var decommissioned int64
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT decommissioned_at FROM devices WHERE id = ?`), id).Scan(&decommissioned)
	if errors.Is(err, sql.ErrNoRows) || err == nil && decommissioned != 0 {
		return ErrNotFound
	}
	return err
}

// MarkAllOffline marks every active online device offline as of at and
// returns how many it changed. The control plane calls it when it starts
// its embedded broker: every device connection died with the previous
// process, and no last will was delivered for them.
func (s *Store) MarkAllOffline(ctx context.Context, at int64) (int64, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`UPDATE devices SET online = 0, status_changed_at = ?
		WHERE online = 1 AND decommissioned_at = 0`), at)
	if err != nil {
		return 0, fmt.Errorf("mark all offline: %w", err)
	}
	return res.RowsAffected()
}
