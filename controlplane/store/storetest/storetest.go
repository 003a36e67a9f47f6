// Package storetest is the behavioural test suite of store.Store, run
// against every backend: each backend's tests call Run with a function that
// opens a fresh, empty store.
package storetest

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// Run runs every behavioural test of the store as subtests of t. open must
// return a new, empty, migrated store; Run closes it.
func Run(t *testing.T, open func(t *testing.T) *store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s *store.Store)
	}{
		{"EnrolDevice", testEnrolDevice},
		{"EnrolRejected", testEnrolRejected},
		{"EnrolConcurrentMaxUses", testEnrolConcurrentMaxUses},
		{"EnrolDuplicateID", testEnrolDuplicateID},
		{"EnrolInvalidDevice", testEnrolInvalidDevice},
		{"SetLabels", testSetLabels},
		{"SetLabelsInvalid", testSetLabelsInvalid},
		{"ListDevicesSelector", testListDevicesSelector},
		{"ListDevicesPagination", testListDevicesPagination},
		{"SetStatusOrdering", testSetStatusOrdering},
		{"Touch", testTouch},
		{"RecordBirth", testRecordBirth},
		{"Decommission", testDecommission},
		{"SetDeviceCredential", testSetDeviceCredential},
		{"EnrolTokens", testEnrolTokens},
		{"APITokens", testAPITokens},
		{"Audit", testAudit},
		{"MigrateIdempotent", testMigrateIdempotent},
		{"DesiredRevision", testDesiredRevision},
		{"MarkAllOffline", testMarkAllOffline},
		{"EnrolTokenByHash", testEnrolTokenByHash},
		{"Telemetry", testTelemetry},
		{"Rollouts", testRollouts},
		{"Events", testEvents},
		{"Leases", testLeases},
		{"Assignments", testAssignments},
		{"Reports", testReports},
		{"BundleChunks", testBundleChunks},
		{"ReleaseFiles", testReleaseFiles},
		{"SupportUploads", testSupportUploads},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

// now is the suite's clock: a fixed time in milliseconds.
const now int64 = 1_760_000_000_000

// Hash returns the sha256 of secret, as callers hash tokens and credentials.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// NewDevice returns a device ready to enrol, with a fresh key pair.
func NewDevice(t testing.TB, id string, labels map[string]string) store.Device {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return store.Device{
		ID:              id,
		PublicKey:       pub,
		CredentialHash:  Hash("mqtt-secret-" + id),
		Labels:          labels,
		AgentVersion:    "1.0.0",
		ProtocolVersion: 1,
		CertSerial:      "serial-" + id,
	}
}

// CreateToken stores an enrol token whose secret is its ID and returns it.
func CreateToken(t testing.TB, s *store.Store, id string, maxUses int, labels map[string]string) store.EnrolToken {
	t.Helper()
	tok := store.EnrolToken{
		ID:        id,
		Hash:      Hash(id),
		Name:      "token " + id,
		MaxUses:   maxUses,
		Labels:    labels,
		CreatedAt: now,
	}
	if err := s.CreateEnrolToken(context.Background(), tok); err != nil {
		t.Fatalf("create enrol token: %v", err)
	}
	return tok
}

// Enrol enrols count devices dev-000… with an unlimited token and returns
// them; labelsOf gives each its labels.
func Enrol(t testing.TB, s *store.Store, count int, labelsOf func(i int) map[string]string) []store.Device {
	t.Helper()
	ctx := context.Background()
	CreateToken(t, s, "bulk", 0, nil)
	var out []store.Device
	for i := range count {
		var labels map[string]string
		if labelsOf != nil {
			labels = labelsOf(i)
		}
		d, err := s.EnrolDevice(ctx, Hash("bulk"), NewDevice(t, fmt.Sprintf("dev-%03d", i), labels), now)
		if err != nil {
			t.Fatalf("enrol: %v", err)
		}
		out = append(out, d)
	}
	return out
}

func wantErr(t *testing.T, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got error %v, want %v", err, want)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustDevice(t *testing.T, s *store.Store, id string) store.Device {
	t.Helper()
	d, err := s.Device(context.Background(), id)
	if err != nil {
		t.Fatalf("device %s: %v", id, err)
	}
	return d
}

func ids(ds []store.Device) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.ID
	}
	return out
}
