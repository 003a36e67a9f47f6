package store

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Device is an enrolled device. Times are milliseconds since the epoch, 0
// meaning never.
type Device struct {
	ID             string
	PublicKey      []byte // ed25519, 32 bytes
	CredentialHash []byte // sha256 of the MQTT secret; nil once decommissioned
	Labels         map[string]string
	// LabelsChangedAt is when the labels were last written: enrolment or
	// SetLabels.
	LabelsChangedAt int64
	Facts           []byte // opaque protobuf bytes from the device's birth; may be nil
	AgentVersion    string
	ProtocolVersion uint32
	EnrolledAt      int64
	LastSeen        int64
	// StatusChangedAt is the time of the newest status report applied,
	// whether or not it flipped Online; older reports are ignored.
	StatusChangedAt  int64
	Online           bool
	DecommissionedAt int64 // 0: active
	EnrolTokenID     string
	CertSerial       string
	// DesiredRevision is the revision of its latest desired state
	// (NextDesiredRevision); read only.
	DesiredRevision uint64
}

// Active reports whether the device is enrolled and not decommissioned.
func (d Device) Active() bool { return d.DecommissionedAt == 0 }

const deviceCols = `id, public_key, credential_hash, labels, labels_changed_at, facts,
	agent_version, protocol_version, enrolled_at, last_seen, status_changed_at, online,
	decommissioned_at, enrol_token_id, cert_serial`

// deviceReadCols are deviceCols and what only the store writes.
const deviceReadCols = deviceCols + `, desired_revision`

func scanDevice(r rowScanner) (Device, error) {
	var (
		d       Device
		labels  string
		version int64
		online  int64
		rev     int64
	)
	err := r.Scan(&d.ID, &d.PublicKey, &d.CredentialHash, &labels, &d.LabelsChangedAt, &d.Facts,
		&d.AgentVersion, &version, &d.EnrolledAt, &d.LastSeen, &d.StatusChangedAt, &online,
		&d.DecommissionedAt, &d.EnrolTokenID, &d.CertSerial, &rev)
	if err != nil {
		return Device{}, err
	}
	d.ProtocolVersion = uint32(version)
	d.Online = online != 0
	d.DesiredRevision = uint64(rev)
	d.Labels, err = decodeLabels(labels)
	if err != nil {
		return Device{}, fmt.Errorf("device %q: %w", d.ID, err)
	}
	return d, nil
}

// getDevice reads one device, decommissioned or not.
func (s *Store) getDevice(ctx context.Context, q querier, id string) (Device, error) {
	d, err := scanDevice(q.QueryRowContext(ctx, s.q(`SELECT `+deviceReadCols+` FROM devices WHERE id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("device %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("device %q: %w", id, err)
	}
	return d, nil
}

// Device returns the device with the given ID, decommissioned or not.
func (s *Store) Device(ctx context.Context, id string) (Device, error) {
	return s.getDevice(ctx, s.rdb, id)
}

// EnrolDevice enrols d with the enrol token whose hash is tokenHash, in one
// transaction: the token must exist (ErrNotFound) and be neither revoked
// (ErrTokenRevoked), expired (ErrTokenExpired) nor used up
// (ErrTokenExhausted); its use count goes up by one; its labels are merged
// under d's own; and the device is inserted with EnrolledAt, LastSeen and
// LabelsChangedAt set to now, offline and never seen online. An ID that was
// ever enrolled, decommissioned or not, gives ErrConflict. On any error
// nothing is changed.
//
// From d the store takes ID, PublicKey, CredentialHash, Labels, Facts,
// AgentVersion, ProtocolVersion and CertSerial; the other fields are its own.
func (s *Store) EnrolDevice(ctx context.Context, tokenHash []byte, d Device, now int64) (Device, error) {
	if err := validateNewDevice(d); err != nil {
		return Device{}, fmt.Errorf("enrol device: %w", err)
	}
	var out Device
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		t, err := scanEnrolToken(tx.QueryRowContext(ctx,
			s.q(`SELECT `+enrolTokenCols+` FROM enrol_tokens WHERE hash = ?`+s.d.forUpdate), tokenHash))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("enrol token: %w", ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("enrol token: %w", err)
		}
		switch {
		case t.RevokedAt != 0:
			return fmt.Errorf("enrol token %q: %w", t.ID, ErrTokenRevoked)
		case t.ExpiresAt != 0 && now >= t.ExpiresAt:
			return fmt.Errorf("enrol token %q: %w", t.ID, ErrTokenExpired)
		case t.MaxUses > 0 && t.Uses >= t.MaxUses:
			return fmt.Errorf("enrol token %q: %w", t.ID, ErrTokenExhausted)
		}

		labels := make(map[string]string, len(t.Labels)+len(d.Labels))
		maps.Copy(labels, t.Labels)
		maps.Copy(labels, d.Labels)
		if err := ValidateLabels(labels); err != nil {
			return err
		}
		labelText, err := encodeLabels(labels)
		if err != nil {
			return err
		}

		// The condition repeats the check above so that the count can
		// never pass MaxUses, whatever the isolation level.
		res, err := tx.ExecContext(ctx, s.q(`UPDATE enrol_tokens SET uses = uses + 1
			WHERE id = ? AND revoked_at = 0 AND (max_uses = 0 OR uses < max_uses)`), t.ID)
		if err != nil {
			return fmt.Errorf("enrol token %q: %w", t.ID, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("enrol token %q: %w", t.ID, ErrTokenExhausted)
		}

		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO devices (`+deviceCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			d.ID, d.PublicKey, d.CredentialHash, labelText, now, nullBytes(d.Facts),
			d.AgentVersion, int64(d.ProtocolVersion), now, now, 0, 0,
			0, t.ID, d.CertSerial)
		if s.d.uniqueViolation(err) {
			return fmt.Errorf("device %q: %w", d.ID, ErrConflict)
		}
		if err != nil {
			return fmt.Errorf("insert device %q: %w", d.ID, err)
		}
		if err := s.writeLabelRows(ctx, tx, d.ID, labels); err != nil {
			return err
		}
		out, err = s.getDevice(ctx, tx, d.ID)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("enrol device: %w", err)
	}
	return out, nil
}

func validateNewDevice(d Device) error {
	if err := ValidateDeviceID(d.ID); err != nil {
		return err
	}
	if len(d.PublicKey) != ed25519.PublicKeySize {
		return fmt.Errorf("%w public key: %d bytes, want %d", ErrInvalid, len(d.PublicKey), ed25519.PublicKeySize)
	}
	if len(d.CredentialHash) != sha256.Size {
		return fmt.Errorf("%w credential hash: %d bytes, want %d", ErrInvalid, len(d.CredentialHash), sha256.Size)
	}
	return ValidateLabels(d.Labels)
}

// writeLabelRows replaces the device_labels rows of a device.
func (s *Store) writeLabelRows(ctx context.Context, tx *sql.Tx, id string, labels map[string]string) error {
	if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM device_labels WHERE device_id = ?`), id); err != nil {
		return fmt.Errorf("device %q labels: %w", id, err)
	}
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_labels (device_id, label_key, label_value) VALUES (?, ?, ?)`),
			id, k, labels[k])
		if err != nil {
			return fmt.Errorf("device %q labels: %w", id, err)
		}
	}
	return nil
}

// ListOptions selects and pages devices for ListDevices.
type ListOptions struct {
	// Selector lists labels a device must all carry with these values.
	Selector map[string]string
	// Online, when set, keeps only devices online (true) or offline (false).
	Online *bool
	// IncludeDecommissioned lists decommissioned devices too.
	IncludeDecommissioned bool
	// Limit caps the number of devices returned; 0 means no limit.
	Limit int
	// After returns only devices whose ID sorts after it: pass the last ID of
	// a page to get the next one.
	After string
}

// ListDevices returns the devices that opts selects, ordered by ID.
func (s *Store) ListDevices(ctx context.Context, opts ListOptions) ([]Device, error) {
	var (
		where []string
		args  []any
	)
	if !opts.IncludeDecommissioned {
		where = append(where, "decommissioned_at = 0")
	}
	if opts.Online != nil {
		where = append(where, "online = ?")
		args = append(args, boolInt(*opts.Online))
	}
	if opts.After != "" {
		where = append(where, "id > ?")
		args = append(args, opts.After)
	}
	for _, k := range slices.Sorted(maps.Keys(opts.Selector)) {
		where = append(where, `EXISTS (SELECT 1 FROM device_labels l
			WHERE l.device_id = devices.id AND l.label_key = ? AND l.label_value = ?)`)
		args = append(args, k, opts.Selector[k])
	}
	var b strings.Builder
	b.WriteString(`SELECT ` + deviceReadCols + ` FROM devices`)
	if len(where) > 0 {
		b.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	b.WriteString(" ORDER BY id")
	if opts.Limit > 0 {
		b.WriteString(" LIMIT ?")
		args = append(args, opts.Limit)
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(b.String()), args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	return out, nil
}

// SetLabels sets and removes labels of an active device and returns it. A key
// may not be both set and removed; removing an absent key is no error. An
// invalid key or value, or a result of more than MaxLabels labels, gives an
// ErrInvalid error and changes nothing.
func (s *Store) SetLabels(ctx context.Context, id string, set map[string]string, remove []string, now int64) (Device, error) {
	if err := ValidateLabels(set); err != nil {
		return Device{}, fmt.Errorf("set labels of %q: %w", id, err)
	}
	for _, k := range remove {
		if _, ok := set[k]; ok {
			return Device{}, fmt.Errorf("set labels of %q: %w label %q: both set and removed", id, ErrInvalid, k)
		}
	}
	var out Device
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var text string
		err := tx.QueryRowContext(ctx,
			s.q(`SELECT labels FROM devices WHERE id = ? AND decommissioned_at = 0`+s.d.forUpdate), id).Scan(&text)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		labels, err := decodeLabels(text)
		if err != nil {
			return err
		}
		maps.Copy(labels, set)
		for _, k := range remove {
			delete(labels, k)
		}
		if err := ValidateLabels(labels); err != nil {
			return err
		}
		if text, err = encodeLabels(labels); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE devices SET labels = ?, labels_changed_at = ? WHERE id = ?`), text, now, id)
		if err != nil {
			return err
		}
		if err := s.writeLabelRows(ctx, tx, id, labels); err != nil {
			return err
		}
		out, err = s.getDevice(ctx, tx, id)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("set labels of %q: %w", id, err)
	}
	return out, nil
}
