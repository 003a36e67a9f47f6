package broker

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/pki"
)

func TestTLSWithPKI(t *testing.T) {
	ca, err := pki.LoadOrCreate(t.TempDir(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := start(t, func(c *Config) { c.TLS = ca.ServerTLS() })
	clientTLS, err := pki.ClientTLS(ca.CAPEM(), "localhost")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("password", func(t *testing.T) {
		svc, err := e.dial(t, e.options("control-1", "control", "service-secret").SetTLSConfig(clientTLS))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := subscribe(t, svc, "dev/#")
		dev, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a").SetTLSConfig(clientTLS))
		if err != nil {
			t.Fatal(err)
		}
		publish(t, dev, "dev/dev-a/telemetry", 1, false, "over tls")
		if m := receive(t, got); string(m.Payload()) != "over tls" {
			t.Fatalf("got %q", m.Payload())
		}
	})

	t.Run("device certificate", func(t *testing.T) {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		certPEM, _, err := ca.IssueDeviceCert("dev-b", pub, time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(priv)
		pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
		if err != nil {
			t.Fatal(err)
		}
		mtls := clientTLS.Clone()
		mtls.Certificates = []tls.Certificate{pair}
		if _, err := e.dial(t, e.options("dev-b", "dev-b", "").SetTLSConfig(mtls)); err != nil {
			t.Fatalf("device certificate without password: %v", err)
		}
		// Without the certificate the empty password is refused.
		if _, err := e.dial(t, e.options("dev-b", "dev-b", "").SetTLSConfig(clientTLS)); err == nil {
			t.Fatal("connected without certificate or password")
		}
	})

	t.Run("foreign CA", func(t *testing.T) {
		other, err := pki.LoadOrCreate(t.TempDir(), nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		foreign, _ := pki.ClientTLS(other.CAPEM(), "localhost")
		if _, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a").SetTLSConfig(foreign)); err == nil {
			t.Fatal("client trusting another CA connected")
		}
	})

	t.Run("plain TCP to the TLS port", func(t *testing.T) {
		o := e.options("dev-a", "dev-a", "secret-a")
		o.Servers[0].Scheme = "tcp"
		if _, err := e.dial(t, o); err == nil {
			t.Fatal("plain MQTT accepted on the TLS listener")
		}
	})
}
