package agenttest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// StartBroker starts the embedded broker, on the port it had before if it
// was stopped.
func (s *Server) StartBroker() error {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if s.broker != nil {
		return nil
	}
	b := mqtt.New(&mqtt.Options{InlineClient: true, Logger: s.log})
	if err := b.AddHook(&authHook{s: s}, nil); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(s.ca.cert)
	tl := listeners.NewTCP(listeners.Config{ID: "tls", Address: s.addr, TLSConfig: &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    pool,
	}})
	if err := b.AddListener(tl); err != nil {
		return fmt.Errorf("broker listen %s: %w", s.addr, err)
	}
	if err := b.Serve(); err != nil {
		return err
	}
	s.addr = tl.Address()
	err := b.Subscribe(s.scheme.Prefix()+"/#", 1, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		s.record(pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
	})
	if err != nil {
		b.Close()
		return err
	}
	s.broker = b
	return nil
}

// StopBroker stops the broker, dropping every connection; retained
// messages and sessions are lost, as with a broker without persistence.
func (s *Server) StopBroker() {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	if s.broker != nil {
		s.broker.Close()
		s.broker = nil
	}
}

func (s *Server) mqttServer() *mqtt.Server {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	return s.broker
}

// authHook checks device passwords (and client certificates, when given) on
// connect and the proto/topic ACL on every publish and subscribe.
type authHook struct {
	mqtt.HookBase
	s *Server
}

func (h *authHook) ID() string { return "agenttest-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnSessionEstablished
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	if user != cl.ID {
		return false
	}
	h.s.mu.Lock()
	d := h.s.devices[user]
	h.s.mu.Unlock()
	if d == nil || subtle.ConstantTimeCompare([]byte(d.password), pk.Connect.Password) != 1 {
		return false
	}
	mtls := false
	if tc, ok := cl.Net.Conn.(*tls.Conn); ok {
		if certs := tc.ConnectionState().PeerCertificates; len(certs) > 0 {
			// A certificate, when given, must be the device's own.
			pub, ok := certs[0].PublicKey.(ed25519.PublicKey)
			if !ok || certs[0].Subject.CommonName != user || !bytes.Equal(pub, d.pub) {
				return false
			}
			mtls = true
		}
	}
	h.s.mu.Lock()
	d.mtls = mtls
	h.s.mu.Unlock()
	return true
}

func (h *authHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.s.mu.Lock()
	defer h.s.mu.Unlock()
	if d := h.s.devices[cl.ID]; d != nil {
		d.connects++
	}
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id := string(cl.Properties.Username)
	if write {
		return h.s.scheme.DeviceMayPublish(id, topic)
	}
	return h.s.scheme.DeviceMaySubscribe(id, topic)
}
