package enrol

import (
	"github.com/flotilla-edge/flotilla/proto/pin"

	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// ErrFingerprint reports a server or CA that does not carry the pinned
// fingerprint (proto/pin's ErrMismatch).
var ErrFingerprint = pin.ErrMismatch

// CheckCA checks that caPEM holds a certificate with fingerprint pin, so the
// CA the server hands out is the one the device pinned.
func CheckCA(caPEM []byte, p []byte) error {
	certs, err := ParseCerts(caPEM)
	if err != nil {
		return err
	}
	for _, c := range certs {
		if pin.Matches(c, p) {
			return nil
		}
	}
	return fmt.Errorf("%w: not in the CA returned by the server", ErrFingerprint)
}

// ParseCerts parses every CERTIFICATE block of a PEM bundle.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("parse CA: no certificate in PEM")
	}
	return out, nil
}

// CAPool returns a pool of the certificates in caPEM.
func CAPool(caPEM []byte) (*x509.CertPool, error) {
	certs, err := ParseCerts(caPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// CAFileTLS returns a TLS config trusting only the CA certificates in file.
func CAFileTLS(file string) (*tls.Config, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool, err := CAPool(b)
	if err != nil {
		return nil, fmt.Errorf("CA file %s: %w", file, err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
