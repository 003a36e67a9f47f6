package registry_test

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func newRegistry(t *testing.T) (*registry.Registry, *store.Store, *pki.Authority) {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ca, err := pki.LoadOrCreate(filepath.Join(t.TempDir(), "pki"), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	storetest.CreateToken(t, st, "tok", 0, nil)
	return registry.New(registry.Config{Store: st, Issuer: ca, CAPEM: ca.CAPEM()}), st, ca
}

func enrolKey(t *testing.T, r *registry.Registry, id string, wantCert bool) (*pb.EnrolResponse, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	req := &pb.EnrolRequest{Token: "tok", DeviceId: id, PublicKey: pub, WantCertificate: wantCert}
	req.Signature = ed25519.Sign(priv, pb.EnrolProof(id, pub, "tok"))
	resp, err := r.Enrol(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return resp, priv
}

func parseCert(t *testing.T, p []byte) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(p)
	if blk == nil {
		t.Fatal("no certificate PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertificateAuth: a device may authenticate with the client
// certificate issued at enrolment instead of its password, never with
// another device's certificate, and not after decommissioning.
func TestCertificateAuth(t *testing.T) {
	r, _, _ := newRegistry(t)
	ctx := context.Background()
	a, _ := enrolKey(t, r, "dev-a", true)
	b, _ := enrolKey(t, r, "dev-b", true)
	certA, certB := parseCert(t, a.GetCertificatePem()), parseCert(t, b.GetCertificatePem())

	p, err := r.Authenticate(ctx, "dev-a", "dev-a", nil, certA)
	if err != nil || p != (broker.Principal{Kind: broker.Device, ID: "dev-a"}) {
		t.Fatalf("own certificate: %v, %v", p, err)
	}
	if _, err := r.Authenticate(ctx, "dev-a", "dev-a", nil, certB); err == nil {
		t.Fatal("dev-b's certificate authenticated dev-a")
	}
	if _, err := r.Authenticate(ctx, "dev-b", "dev-a", nil, certA); err == nil {
		t.Fatal("client ID other than the username accepted")
	}
	if _, err := r.Authenticate(ctx, "dev-a", "dev-a", []byte("wrong"), certA); err == nil {
		t.Fatal("a wrong password with a certificate accepted: a password, when given, must be right")
	}
	if _, err := r.Authenticate(ctx, "dev-a", "dev-a", []byte(a.GetMqttPassword()), nil); err != nil {
		t.Fatalf("password: %v", err)
	}
	if _, err := r.Decommission(ctx, "test", "dev-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(ctx, "dev-a", "dev-a", nil, certA); err == nil {
		t.Fatal("decommissioned device's certificate still works")
	}
	if _, err := r.Authenticate(ctx, "dev-a", "dev-a", []byte(a.GetMqttPassword()), nil); err == nil {
		t.Fatal("decommissioned device's password still works")
	}
}

func TestServiceAuthAndACL(t *testing.T) {
	r, _, _ := newRegistry(t)
	ctx := context.Background()
	if _, err := r.Authenticate(ctx, "x", registry.ServiceUser, []byte("anything"), nil); err == nil {
		t.Fatal("service user accepted with no service secret configured")
	}
	dev := broker.Principal{Kind: broker.Device, ID: "dev-a"}
	svc := broker.Principal{Kind: broker.Service, ID: registry.ServiceUser}
	for _, c := range []struct {
		p     broker.Principal
		topic string
		pub   bool
		sub   bool
	}{
		{dev, "flotilla/v1/dev/dev-a/birth", true, false},
		{dev, "flotilla/v1/dev/dev-a/desired", false, true},
		{dev, "flotilla/v1/dev/dev-b/desired", false, false},
		{dev, "flotilla/v1/dev/dev-b/birth", false, false},
		{svc, "flotilla/v1/dev/dev-b/desired", true, true},
		{svc, "$SYS/broker/clients", false, false},
		{broker.Principal{}, "flotilla/v1/dev/dev-a/birth", false, false},
	} {
		if got := r.CanPublish(c.p, c.topic); got != c.pub {
			t.Errorf("%v publish %s: %v", c.p, c.topic, got)
		}
		if got := r.CanSubscribe(c.p, c.topic); got != c.sub {
			t.Errorf("%v subscribe %s: %v", c.p, c.topic, got)
		}
	}
}

// TestHandleMessageNeverPanics: garbage on every device topic is counted
// and dropped.
func TestHandleMessageNeverPanics(t *testing.T) {
	r, st, _ := newRegistry(t)
	enrolKey(t, r, "dev-a", false)
	ctx := context.Background()
	before, _ := st.Device(ctx, "dev-a")
	for _, k := range []string{"birth", "status", "heartbeat", "reported", "cmd-result", "telemetry", "nope"} {
		r.HandleMessage(ctx, "flotilla/v1/dev/dev-a/"+k, []byte{0x0a, 0xff, 0xff})
	}
	r.HandleMessage(ctx, "elsewhere/x", []byte("x"))
	d, _ := st.Device(ctx, "dev-a")
	if d.Online || d.LastSeen != before.LastSeen || d.AgentVersion != "" || d.StatusChangedAt != 0 {
		t.Fatalf("garbage changed the device: %+v", d)
	}
	// Five malformed payloads on the registry's topics and two unknown
	// topics; telemetry belongs to another component and is left alone.
	if got := r.Metrics().Get("dropped_malformed"); got == nil || got.String() != "7" {
		t.Fatalf("dropped_malformed = %v, want 7", got)
	}
}
