package pki

import (
	"github.com/flotilla-edge/flotilla/proto/pin"

	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// ErrNoCAKey is returned by [Authority.IssueDeviceCert] when the authority
// holds no CA private key (operator-supplied certificates without a CA key).
var ErrNoCAKey = errors.New("no ca private key: device certificates cannot be issued")

// Authority is the server's trust material: the CA devices trust, the
// server certificate, and (optionally) the CA key that signs device
// certificates. It is safe for concurrent use; it never changes once built.
type Authority struct {
	root      *x509.Certificate // the CA devices trust and pin
	caPEM     []byte            // every certificate devices should trust, PEM
	clientCAs *x509.CertPool    // verifies device client certificates
	server    tls.Certificate   // leaf, then its chain

	issuer    *x509.Certificate // signs device certificates; nil without a key
	issuerKey crypto.Signer
}

// Fingerprint is the SHA-256 of the CA certificate's DER, as upper-case hex
// pairs joined by colons: what the server prints at start and devices may pin.
func (a *Authority) Fingerprint() string {
	return Fingerprint(a.root)
}

// Fingerprint formats the SHA-256 of a certificate's DER the way
// [Authority.Fingerprint] does (proto/pin's form).
func Fingerprint(cert *x509.Certificate) string {
	return pin.Fingerprint(cert.Raw)
}

// CAPEM returns the PEM of the certificates devices should trust (a copy).
func (a *Authority) CAPEM() []byte {
	return append([]byte(nil), a.caPEM...)
}

// CACert returns the CA certificate devices trust and pin.
func (a *Authority) CACert() *x509.Certificate { return a.root }

// ServerCert returns the server's leaf certificate.
func (a *Authority) ServerCert() *x509.Certificate { return a.server.Leaf }

// CanIssue reports whether the authority holds a CA key, that is whether
// [Authority.IssueDeviceCert] can work.
func (a *Authority) CanIssue() bool { return a.issuerKey != nil }

// ServerTLS returns a new TLS configuration for the MQTT and HTTPS
// listeners: TLS 1.2 or later, the server certificate, and client
// certificates verified against the CA when a client offers one, so devices
// may authenticate by certificate or by password.
func (a *Authority) ServerTLS() *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{a.server},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    a.clientCAs,
	}
}

// ClientTLS returns a TLS configuration for a client (agent, flotctl,
// tests) that trusts only the certificates in caPEM and expects the server
// to be serverName. An empty serverName lets the dialer take it from the
// address it dials (net/http, crypto/tls.Dial and paho all do).
func ClientTLS(caPEM []byte, serverName string) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("ca pem holds no certificate")
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: serverName,
	}, nil
}
