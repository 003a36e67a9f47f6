package store

import (
	"context"
	"database/sql"
	"fmt"
)

// MaxReportBytes bounds one stored reported state.
const MaxReportBytes = 1 << 20

// DeviceReport is a device's latest reported state: Payload is the
// flotilla.v1.ReportedState it sent (opaque here), DesiredRevision the
// desired revision it answers.
type DeviceReport struct {
	DeviceID        string
	DesiredRevision uint64
	ReceivedAt      int64
	Payload         []byte
}

// PutReports stores reports, each replacing its device's previous one, in
// one transaction: all are stored or none. A later report of the same
// device in reports wins.
func (s *Store) PutReports(ctx context.Context, reports []DeviceReport) error {
	for _, r := range reports {
		if err := ValidateDeviceID(r.DeviceID); err != nil {
			return fmt.Errorf("put reports: %w", err)
		}
		if len(r.Payload) == 0 || len(r.Payload) > MaxReportBytes {
			return fmt.Errorf("put reports: %w report of %s: payload must be 1 to %d bytes", ErrInvalid, r.DeviceID, MaxReportBytes)
		}
	}
	if len(reports) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO device_reports (device_id, desired_revision, received_at, payload)
			VALUES (?, ?, ?, ?)
			ON CONFLICT (device_id) DO UPDATE SET desired_revision = excluded.desired_revision,
				received_at = excluded.received_at, payload = excluded.payload`))
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, r := range reports {
			if _, err := stmt.ExecContext(ctx, r.DeviceID, int64(r.DesiredRevision), r.ReceivedAt, r.Payload); err != nil {
				return fmt.Errorf("device %s: %w", r.DeviceID, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("put reports: %w", err)
	}
	return nil
}

// ListReports lists stored reports by device ID, at most limit (0: 1000)
// of devices after after.
func (s *Store) ListReports(ctx context.Context, after string, limit int) ([]DeviceReport, error) {
	if limit <= 0 || limit > 1000 {
		limit = 1000
	}
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT device_id, desired_revision, received_at, payload FROM device_reports
		WHERE device_id > ? ORDER BY device_id LIMIT ?`), after, limit)
	if err != nil {
		return nil, fmt.Errorf("list reports: %w", err)
	}
	defer rows.Close()
	var out []DeviceReport
	for rows.Next() {
		var r DeviceReport
		var rev int64
		if err := rows.Scan(&r.DeviceID, &rev, &r.ReceivedAt, &r.Payload); err != nil {
			return nil, fmt.Errorf("list reports: %w", err)
		}
		r.DesiredRevision = uint64(rev)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list reports: %w", err)
	}
	return out, nil
}
