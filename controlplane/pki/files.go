package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// FromFiles builds an authority from operator-supplied files:
//
//   - certFile: the server certificate, optionally followed by its
//     intermediates; keyFile: its private key;
//   - caFile: the certificates devices trust and that verify device client
//     certificates. It must contain the root of the server certificate's
//     chain, because devices get exactly this file at enrolment; put a
//     second CA in it when device certificates come from another one.
//
// Such an authority issues no device certificates (devices then use
// passwords) until [Authority.WithCAKey] gives it the key of one of the CAs
// in caFile. Only certificates from caFile reach devices, even if the file
// holds other PEM blocks. The server certificate must be valid now; the
// server presents it with its verified chain up to and including the root
// (see [PinnedClientTLS]).
func FromFiles(certFile, keyFile, caFile string) (*Authority, error) {
	chain, _, err := readCerts(certFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	key, err := readKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("server key: %w", err)
	}
	leaf := chain[0]
	if !keyMatches(leaf, key) {
		return nil, fmt.Errorf("%s does not belong to %s", keyFile, certFile)
	}
	cas, _, err := readCerts(caFile)
	if err != nil {
		return nil, fmt.Errorf("ca certificates: %w", err)
	}
	pool := x509.NewCertPool()
	var caPEM bytes.Buffer
	for _, c := range cas {
		pool.AddCert(c)
		caPEM.Write(encodeCert(c.Raw))
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   time.Now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return nil, fmt.Errorf("%s does not verify against %s (devices trust only that file): %w", certFile, caFile, err)
	}
	// Serve the verified chain, root included, so that clients pinning the
	// root's fingerprint find it.
	raw := make([][]byte, len(chains[0]))
	for i, c := range chains[0] {
		raw[i] = c.Raw
	}
	return &Authority{
		root:      chains[0][len(chains[0])-1],
		caPEM:     caPEM.Bytes(),
		clientCAs: pool,
		server:    tls.Certificate{Certificate: raw, PrivateKey: key, Leaf: leaf},
	}, nil
}

// WithCAKey returns a copy of a that issues device certificates with the key
// in keyFile, which must belong to one of the CA certificates devices trust
// ([Authority.CAPEM]).
func (a *Authority) WithCAKey(keyFile string) (*Authority, error) {
	key, err := readKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	cas, err := parseCerts(a.caPEM)
	if err != nil {
		return nil, fmt.Errorf("ca certificates: %w", err)
	}
	for _, c := range cas {
		if !keyMatches(c, key) {
			continue
		}
		if !c.IsCA || (c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageCertSign == 0) {
			return nil, fmt.Errorf("%s belongs to %q, which may not sign certificates", keyFile, c.Subject.CommonName)
		}
		b := *a
		b.issuer, b.issuerKey = c, key
		return &b, nil
	}
	return nil, fmt.Errorf("%s belongs to none of the trusted ca certificates", keyFile)
}
