package broker

import (
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/controlplane/pki"
)

// BenchmarkConnect measures one full device connect: TCP, CONNECT, a
// SHA-256 password check, CONNACK, then DISCONNECT, sequentially.
func BenchmarkConnect(b *testing.B) {
	e := start(b, nil)
	o := e.options("dev-a", "dev-a", "secret-a")
	b.ReportAllocs()
	for b.Loop() {
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.Wait()
		if err := tok.Error(); err != nil {
			b.Fatal(err)
		}
		c.Disconnect(0)
	}
	if s := e.b.Stats(); s.RefusedConnects != 0 {
		b.Fatalf("refused %d", s.RefusedConnects)
	}
}

// BenchmarkConnectTLS is BenchmarkConnect over TLS 1.3 with the server's
// own P-256 certificate: a full handshake per connect (no resumption).
func BenchmarkConnectTLS(b *testing.B) {
	ca, err := pki.LoadOrCreate(b.TempDir(), nil, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	e := start(b, func(c *Config) { c.TLS = ca.ServerTLS() })
	clientTLS, err := pki.ClientTLS(ca.CAPEM(), "localhost")
	if err != nil {
		b.Fatal(err)
	}
	o := e.options("dev-a", "dev-a", "secret-a").SetTLSConfig(clientTLS)
	b.ReportAllocs()
	for b.Loop() {
		c := paho.NewClient(o)
		tok := c.Connect()
		tok.Wait()
		if err := tok.Error(); err != nil {
			b.Fatal(err)
		}
		c.Disconnect(0)
	}
}
