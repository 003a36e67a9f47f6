package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
)

// DeviceCredential returns the hash of a device's MQTT secret and whether the
// device may connect: what the broker's authenticator asks on every connect,
// one primary-key read. A decommissioned device gives a nil hash and
// active false; an unknown one ErrNotFound.
func (s *Store) DeviceCredential(ctx context.Context, id string) (hash []byte, active bool, err error) {
	var decommissioned int64
	err = s.credentialStmt.QueryRowContext(ctx, id).Scan(&hash, &decommissioned)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, fmt.Errorf("device credential of %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, false, fmt.Errorf("device credential of %q: %w", id, err)
	}
	if decommissioned != 0 || len(hash) == 0 {
		return nil, false, nil
	}
	return hash, true, nil
}

// SetDeviceCredential replaces the hash of an active device's MQTT secret,
// to rotate it.
func (s *Store) SetDeviceCredential(ctx context.Context, id string, hash []byte) error {
	if len(hash) != sha256.Size {
		return fmt.Errorf("set device credential of %q: %w credential hash: %d bytes, want %d", id, ErrInvalid, len(hash), sha256.Size)
	}
	res, err := s.wdb.ExecContext(ctx,
		s.q(`UPDATE devices SET credential_hash = ? WHERE id = ? AND decommissioned_at = 0`), hash, id)
	if err != nil {
		return fmt.Errorf("set device credential of %q: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("set device credential of %q: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("set device credential of %q: %w", id, ErrNotFound)
	}
	return nil
}

// Decommission retires a device for good: DecommissionedAt = at, Online =
// false, and its credential cleared so it can no longer connect. Its row
// stays, so the ID is never reused. Decommissioning an already decommissioned
// device is idempotent: it changes nothing and returns the device as it is,
// with the DecommissionedAt of the first call. An unknown ID gives
// ErrNotFound.
func (s *Store) Decommission(ctx context.Context, id string, at int64) (Device, error) {
	if at <= 0 {
		return Device{}, fmt.Errorf("decommission %q: %w time %d", id, ErrInvalid, at)
	}
	var out Device
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET decommissioned_at = ?, online = 0, credential_hash = NULL
			WHERE id = ? AND decommissioned_at = 0`), at, id)
		if err != nil {
			return err
		}
		out, err = s.getDevice(ctx, tx, id)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("decommission %q: %w", id, err)
	}
	return out, nil
}
