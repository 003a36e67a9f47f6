package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// NextDesiredRevision increments and returns the revision of a device's
// desired state. Agents ignore a revision lower than one they accepted, so
// it must never go back: it lives in the store, not in a process.
func (s *Store) NextDesiredRevision(ctx context.Context, id string) (uint64, error) {
	var rev int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET desired_revision = desired_revision + 1
			WHERE id = ? AND decommissioned_at = 0`), id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return ErrNotFound
		}
		return tx.QueryRowContext(ctx, s.q(`SELECT desired_revision FROM devices WHERE id = ?`), id).Scan(&rev)
	})
	if err != nil {
		return 0, fmt.Errorf("next desired revision of %q: %w", id, err)
	}
	return uint64(rev), nil
}

// EnrolTokenByHash returns the enrol token whose secret hashes to hash,
// revoked, expired and exhausted ones included. An unknown hash gives
// ErrNotFound.
func (s *Store) EnrolTokenByHash(ctx context.Context, hash []byte) (EnrolToken, error) {
	t, err := scanEnrolToken(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+enrolTokenCols+` FROM enrol_tokens WHERE hash = ?`), hash))
	if errors.Is(err, sql.ErrNoRows) {
		return EnrolToken{}, fmt.Errorf("enrol token: %w", ErrNotFound)
	}
	if err != nil {
		return EnrolToken{}, fmt.Errorf("enrol token: %w", err)
	}
	return t, nil
}
