package pki

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

// PinnedClientTLS returns a TLS configuration for a client that knows only
// the CA's fingerprint (as [Authority.Fingerprint] prints it; case, colons
// and a "sha256:" prefix do not matter). The server must send that CA
// certificate in its chain, which servers built by this package do; the
// chain is then verified against it as the only root, host name included.
func PinnedClientTLS(fingerprint string) (*tls.Config, error) {
	pin, err := parseFingerprint(fingerprint)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The usual verification needs a root pool, which the pin replaces;
		// VerifyConnection does the whole verification instead.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin)
		},
	}, nil
}

func parseFingerprint(s string) ([]byte, error) {
	h := strings.TrimSpace(s)
	if len(h) > 7 && strings.EqualFold(h[:7], "sha256:") {
		h = h[7:]
	}
	h = strings.NewReplacer(":", "", " ", "").Replace(h)
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("ca fingerprint %q is not a SHA-256 in hex", s)
	}
	return b, nil
}

func verifyPinned(cs tls.ConnectionState, pin []byte) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("server sent no certificate")
	}
	roots := x509.NewCertPool()
	inter := x509.NewCertPool()
	found := false
	for _, c := range cs.PeerCertificates[1:] {
		sum := sha256.Sum256(c.Raw)
		if subtle.ConstantTimeCompare(sum[:], pin) == 1 && c.IsCA {
			roots.AddCert(c)
			found = true
			continue
		}
		inter.AddCert(c)
	}
	if !found {
		return errors.New("server certificate chain does not include the pinned ca")
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		DNSName:       cs.ServerName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verify server certificate against the pinned ca: %w", err)
	}
	return nil
}
