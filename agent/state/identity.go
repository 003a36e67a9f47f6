package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Identity is what enrolment gave the device: its ID and how it reaches and
// authenticates to the broker.
type Identity struct {
	DeviceID     string
	MQTTURL      string
	MQTTUsername string
	MQTTPassword string // a secret: never log it
	TopicPrefix  string
	CAPEM        []byte // the CA that signs the broker's and API's certificates
	CertPEM      []byte // the device's client certificate, if one was issued
	EnrolledAt   time.Time
}

// String hides the password, so an Identity can be logged safely.
func (id Identity) String() string {
	return fmt.Sprintf("Identity{DeviceID:%s MQTTURL:%s Username:%s TopicPrefix:%s Cert:%t}",
		id.DeviceID, id.MQTTURL, id.MQTTUsername, id.TopicPrefix, len(id.CertPEM) > 0)
}

// Identity returns the stored identity, or ErrNotEnrolled.
func (d *DB) Identity(ctx context.Context) (Identity, error) {
	var id Identity
	var at int64
	err := d.db.QueryRowContext(ctx, `SELECT device_id, mqtt_url, mqtt_username, mqtt_password,
		topic_prefix, ca_pem, certificate_pem, enrolled_at_ms FROM identity WHERE id = 1`).
		Scan(&id.DeviceID, &id.MQTTURL, &id.MQTTUsername, &id.MQTTPassword, &id.TopicPrefix,
			&id.CAPEM, &id.CertPEM, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return Identity{}, ErrNotEnrolled
	}
	if err != nil {
		return Identity{}, fmt.Errorf("read identity: %w", err)
	}
	id.EnrolledAt = time.UnixMilli(at)
	return id, nil
}

// SaveIdentity stores the identity, replacing any earlier one.
func (d *DB) SaveIdentity(ctx context.Context, id Identity) error {
	if id.DeviceID == "" || id.MQTTURL == "" {
		return errors.New("save identity: device ID and MQTT URL are required")
	}
	_, err := d.db.ExecContext(ctx, `INSERT OR REPLACE INTO identity (id, device_id, mqtt_url,
		mqtt_username, mqtt_password, topic_prefix, ca_pem, certificate_pem, enrolled_at_ms)
		VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?)`,
		id.DeviceID, id.MQTTURL, id.MQTTUsername, id.MQTTPassword, id.TopicPrefix,
		nullBytes(id.CAPEM), nullBytes(id.CertPEM), unixMS(id.EnrolledAt))
	if err != nil {
		return fmt.Errorf("save identity: %w", err)
	}
	return nil
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}
