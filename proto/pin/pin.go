// Package pin is the protocol's rule for trusting a control plane on first
// contact: the SHA-256 fingerprint of its CA certificate (printed by
// flotilla-server at every start, upper-case hex pairs joined by colons), and
// how a client checks a server against it. A device pins the fingerprint
// before it has any credential; flotctl can do the same.
package pin

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// ErrMismatch reports a server or CA that does not carry the pinned
// fingerprint.
var ErrMismatch = errors.New("CA fingerprint does not match the pinned one")

// Fingerprint formats the SHA-256 of a certificate's DER: upper-case hex
// pairs joined by colons, the form openssl prints.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	h := strings.ToUpper(hex.EncodeToString(sum[:]))
	var b strings.Builder
	for i := 0; i < len(h); i += 2 {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(h[i : i+2])
	}
	return b.String()
}

// Parse parses a fingerprint: hex, with or without colons or spaces, either
// case, with or without a "sha256:" prefix.
func Parse(s string) ([]byte, error) {
	h := strings.TrimSpace(s)
	if len(h) > 7 && strings.EqualFold(h[:7], "sha256:") {
		h = h[7:]
	}
	h = strings.NewReplacer(":", "", " ", "").Replace(h)
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("CA fingerprint %q is not a SHA-256 in hex", s)
	}
	return b, nil
}

// Matches reports whether cert carries the fingerprint pin.
func Matches(cert *x509.Certificate, pin []byte) bool {
	sum := sha256.Sum256(cert.Raw)
	return subtle.ConstantTimeCompare(sum[:], pin) == 1
}

// TLSConfig returns a client configuration that accepts a server only if
// the chain it sends contains a CA certificate with the fingerprint pin and
// its leaf verifies against that CA as the only root, host name and server
// usage included.
func TLSConfig(pin []byte) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The usual verification needs a root pool, which the pin replaces;
		// VerifyConnection does the whole verification instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return Verify(cs, pin)
		},
	}
}

// Verify is TLSConfig's check of one connection.
func Verify(cs tls.ConnectionState, pin []byte) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	found := false
	for _, c := range cs.PeerCertificates[1:] {
		if c.IsCA && Matches(c, pin) {
			roots.AddCert(c)
			found = true
			continue
		}
		inter.AddCert(c)
	}
	if !found {
		return fmt.Errorf("%w: the server's certificate chain does not include the pinned CA", ErrMismatch)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       cs.ServerName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("server certificate does not verify against the pinned CA: %w", err)
	}
	return nil
}
