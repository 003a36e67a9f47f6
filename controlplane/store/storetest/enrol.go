package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testEnrolDevice(t *testing.T, s *store.Store) {
	ctx := context.Background()
	tok := CreateToken(t, s, "factory", 10, map[string]string{"site": "lyon", "tier": "default"})
	in := NewDevice(t, "cam-1", map[string]string{"tier": "gold", "role": "camera"})
	in.Facts = []byte{0x0a, 0x03, 'a', 'r', 'm'}
	in.EnrolledAt, in.LastSeen, in.Online = 1, 2, true // not the caller's to set

	got, err := s.EnrolDevice(ctx, tok.Hash, in, now)
	must(t, err)
	want := store.Device{
		ID:              "cam-1",
		PublicKey:       in.PublicKey,
		CredentialHash:  in.CredentialHash,
		Labels:          map[string]string{"site": "lyon", "tier": "gold", "role": "camera"},
		LabelsChangedAt: now,
		Facts:           in.Facts,
		AgentVersion:    "1.0.0",
		ProtocolVersion: 1,
		EnrolledAt:      now,
		LastSeen:        now,
		EnrolTokenID:    "factory",
		CertSerial:      "serial-cam-1",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("enrolled device\n got %+v\nwant %+v", got, want)
	}
	if stored := mustDevice(t, s, "cam-1"); !reflect.DeepEqual(stored, want) {
		t.Fatalf("stored device\n got %+v\nwant %+v", stored, want)
	}
	if u := tokenUses(t, s, "factory"); u != 1 {
		t.Fatalf("token uses = %d, want 1", u)
	}
	hash, active, err := s.DeviceCredential(ctx, "cam-1")
	must(t, err)
	if !active || !reflect.DeepEqual(hash, in.CredentialHash) {
		t.Fatalf("credential = %x, %v; want %x, true", hash, active, in.CredentialHash)
	}

	// A token without labels and a device without labels.
	CreateToken(t, s, "plain", 0, nil)
	got, err = s.EnrolDevice(ctx, Hash("plain"), NewDevice(t, "cam-2", nil), now)
	must(t, err)
	if len(got.Labels) != 0 || got.Facts != nil {
		t.Fatalf("labels = %v, facts = %v; want none", got.Labels, got.Facts)
	}
}

// testEnrolRejected checks that every refused enrolment leaves nothing
// changed: no device and the token's use count as it was.
func testEnrolRejected(t *testing.T, s *store.Store) {
	ctx := context.Background()
	CreateToken(t, s, "used-up", 1, nil)
	_, err := s.EnrolDevice(ctx, Hash("used-up"), NewDevice(t, "first", nil), now)
	must(t, err)

	expired := store.EnrolToken{ID: "expired", Hash: Hash("expired"), ExpiresAt: now, CreatedAt: now - 1000}
	must(t, s.CreateEnrolToken(ctx, expired))
	CreateToken(t, s, "revoked", 0, nil)
	must(t, s.RevokeEnrolToken(ctx, "revoked", now-1))
	bigLabels := map[string]string{}
	for i := range 40 {
		bigLabels[fmt.Sprintf("t%d", i)] = "x"
	}
	CreateToken(t, s, "many-labels", 0, bigLabels)

	tooMany := map[string]string{}
	for i := range 30 {
		tooMany[fmt.Sprintf("d%d", i)] = "y"
	}
	tests := []struct {
		name   string
		token  string
		labels map[string]string
		uses   int
		want   error
	}{
		{"exhausted", "used-up", nil, 1, store.ErrTokenExhausted},
		{"expired", "expired", nil, 0, store.ErrTokenExpired},
		{"revoked", "revoked", nil, 0, store.ErrTokenRevoked},
		{"unknown", "no-such-token", nil, -1, store.ErrNotFound},
		{"merged labels over the limit", "many-labels", tooMany, 0, store.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := s.EnrolDevice(ctx, Hash(tt.token), NewDevice(t, "dev-"+strings.ReplaceAll(tt.name, " ", "-"), tt.labels), now)
			wantErr(t, err, tt.want)
			if tt.uses >= 0 {
				if u := tokenUses(t, s, tt.token); u != tt.uses {
					t.Errorf("token uses = %d, want %d", u, tt.uses)
				}
			}
			all, err := s.ListDevices(ctx, store.ListOptions{IncludeDecommissioned: true})
			must(t, err)
			if len(all) != 1 || all[0].ID != "first" {
				t.Errorf("devices = %v, want only first", ids(all))
			}
		})
	}
}

func testEnrolConcurrentMaxUses(t *testing.T, s *store.Store) {
	ctx := context.Background()
	const workers, maxUses = 20, 5
	CreateToken(t, s, "batch", maxUses, nil)
	devices := make([]store.Device, workers)
	for i := range devices {
		devices[i] = NewDevice(t, fmt.Sprintf("node-%02d", i), nil)
	}
	errs := make([]error, workers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range workers {
		wg.Go(func() {
			<-start
			_, errs[i] = s.EnrolDevice(ctx, Hash("batch"), devices[i], now)
		})
	}
	close(start)
	wg.Wait()

	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrTokenExhausted):
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	if ok != maxUses {
		t.Errorf("%d enrolments succeeded, want %d", ok, maxUses)
	}
	if u := tokenUses(t, s, "batch"); u != maxUses {
		t.Errorf("token uses = %d, want %d", u, maxUses)
	}
	all, err := s.ListDevices(ctx, store.ListOptions{})
	must(t, err)
	if len(all) != maxUses {
		t.Errorf("%d devices stored, want %d", len(all), maxUses)
	}
}

func testEnrolDuplicateID(t *testing.T, s *store.Store) {
	ctx := context.Background()
	CreateToken(t, s, "tok", 0, nil)
	first, err := s.EnrolDevice(ctx, Hash("tok"), NewDevice(t, "dup", map[string]string{"a": "1"}), now)
	must(t, err)

	_, err = s.EnrolDevice(ctx, Hash("tok"), NewDevice(t, "dup", map[string]string{"b": "2"}), now+1)
	wantErr(t, err, store.ErrConflict)
	if got := mustDevice(t, s, "dup"); !reflect.DeepEqual(got, first) {
		t.Fatalf("device changed by a refused enrolment:\n got %+v\nwant %+v", got, first)
	}
	if u := tokenUses(t, s, "tok"); u != 1 {
		t.Fatalf("token uses = %d, want 1", u)
	}

	// IDs are never reused, not even after decommissioning.
	_, err = s.Decommission(ctx, "dup", now+2)
	must(t, err)
	_, err = s.EnrolDevice(ctx, Hash("tok"), NewDevice(t, "dup", nil), now+3)
	wantErr(t, err, store.ErrConflict)
}

func testEnrolInvalidDevice(t *testing.T, s *store.Store) {
	ctx := context.Background()
	CreateToken(t, s, "tok", 0, nil)
	good := NewDevice(t, "ok", nil)
	tests := map[string]func(d *store.Device){
		"empty id":        func(d *store.Device) { d.ID = "" },
		"id with slash":   func(d *store.Device) { d.ID = "a/b" },
		"id with +":       func(d *store.Device) { d.ID = "a+b" },
		"long id":         func(d *store.Device) { d.ID = strings.Repeat("x", store.MaxDeviceIDLen+1) },
		"short key":       func(d *store.Device) { d.PublicKey = d.PublicKey[:31] },
		"no credential":   func(d *store.Device) { d.CredentialHash = nil },
		"bad label key":   func(d *store.Device) { d.Labels = map[string]string{"a b": "x"} },
		"long label":      func(d *store.Device) { d.Labels = map[string]string{"k": strings.Repeat("v", 256)} },
		"empty label key": func(d *store.Device) { d.Labels = map[string]string{"": "x"} },
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			d := good
			d.Labels = maps.Clone(good.Labels)
			mutate(&d)
			_, err := s.EnrolDevice(ctx, Hash("tok"), d, now)
			wantErr(t, err, store.ErrInvalid)
		})
	}
	if u := tokenUses(t, s, "tok"); u != 0 {
		t.Fatalf("token uses = %d, want 0", u)
	}
}

func tokenUses(t *testing.T, s *store.Store, id string) int {
	t.Helper()
	toks, err := s.ListEnrolTokens(context.Background())
	must(t, err)
	for _, tok := range toks {
		if tok.ID == id {
			return tok.Uses
		}
	}
	t.Fatalf("no enrol token %q", id)
	return 0
}
