// Package agenttest is a fake control plane for agent tests: a real embedded
// MQTT broker (mochi-mqtt, over TLS, with per-device passwords and the topic
// ACL of proto/topic) and a real HTTPS enrolment endpoint, both on
// 127.0.0.1 and both using a throwaway CA.
//
// It implements just enough of the control plane for the agent to be tested
// against real servers: POST /v1/enrol (validating the request and issuing a
// password and client certificate), publishing desired states and commands
// as the control plane, and recording every message devices publish so that
// tests can wait for one. It deliberately does not import controlplane/: the
// agent must never depend on the server's code, even in tests.
package agenttest

import (
	"crypto/ed25519"
	"crypto/tls"
	"io"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"

	"github.com/flotilla-edge/flotilla/proto/pin"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Server is the fake control plane.
type Server struct {
	t      testing.TB
	ca     *authority
	cert   tls.Certificate
	scheme topic.Scheme
	token  string
	log    *slog.Logger
	http   *httptest.Server

	mu       sync.Mutex
	devices  map[string]*device
	failures []failure
	enrols   int
	msgs     []Received
	notify   chan struct{} // closed and replaced when a message is recorded

	brokerMu sync.Mutex
	broker   *mqtt.Server
	addr     string // the broker's address, kept across restarts
}

type device struct {
	password string
	pub      ed25519.PublicKey
	connects int
	mtls     bool // the last connection presented the issued client certificate
}

type failure struct {
	code int
	msg  string
}

// Token is the bootstrap token the fake accepts.
const Token = "test-bootstrap-token"

// New starts the fake control plane; it is stopped when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	ca, err := newAuthority("flotilla test CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.serverCert()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		t: t, ca: ca, cert: cert, scheme: topic.Default(), token: Token,
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		devices: map[string]*device{}, notify: make(chan struct{}),
		addr: "127.0.0.1:0",
	}
	if err := s.StartBroker(); err != nil {
		t.Fatal(err)
	}
	s.startHTTP()
	t.Cleanup(func() {
		s.http.Close()
		s.StopBroker()
	})
	return s
}

// URL is the enrolment API's base URL (https://127.0.0.1:port).
func (s *Server) URL() string { return s.http.URL }

// Token returns the bootstrap token that enrolment accepts.
func (s *Server) Token() string { return s.token }

// CAPEM returns the CA certificate that signs both servers' certificates.
func (s *Server) CAPEM() []byte { return s.ca.pem }

// CAFingerprint returns the CA certificate's SHA-256 fingerprint.
func (s *Server) CAFingerprint() string { return pin.Fingerprint(s.ca.cert.Raw) }

// Scheme returns the topic scheme the fake serves.
func (s *Server) Scheme() topic.Scheme { return s.scheme }

// MQTTURL returns the broker's URL (mqtts://127.0.0.1:port).
func (s *Server) MQTTURL() string {
	s.brokerMu.Lock()
	defer s.brokerMu.Unlock()
	return "mqtts://" + s.addr
}

// FailEnrol makes the next n enrolment requests fail with HTTP status code
// and {"error": msg}.
func (s *Server) FailEnrol(code int, msg string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.failures = append(s.failures, failure{code, msg})
	}
}

// Enrolments returns how many devices enrolled successfully.
func (s *Server) Enrolments() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.enrols
}

// Connects returns how many times device id connected to the broker.
func (s *Server) Connects(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.devices[id]; d != nil {
		return d.connects
	}
	return 0
}

// UsedClientCert reports whether device id's last connection presented the
// client certificate issued to it.
func (s *Server) UsedClientCert(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.devices[id]
	return d != nil && d.mtls
}
