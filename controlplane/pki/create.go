package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names inside the folder given to LoadOrCreate.
const (
	CAFile        = "ca.pem"
	CAKeyFile     = "ca-key.pem"
	ServerFile    = "server.pem"
	ServerKeyFile = "server-key.pem"
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	// RenewBefore is how long before expiry LoadOrCreate re-issues the
	// server certificate.
	RenewBefore = 30 * 24 * time.Hour
	// backdate tolerates devices whose clocks run a little behind.
	backdate = time.Hour
)

// LoadOrCreate returns the authority kept in dir, creating what is missing:
// the CA on first start, and the server certificate whenever it is missing,
// not signed by the CA, within [RenewBefore] of expiry, or lacks one of
// hosts (names or IP addresses; localhost, 127.0.0.1, ::1 and the machine's
// host name are always included).
//
// A CA key without its certificate (a crash between the two writes) gets a
// new certificate; a CA certificate without its key, and any file that does
// not parse, is an error and nothing is overwritten.
func LoadOrCreate(dir string, hosts []string, now time.Time) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create pki folder: %w", err)
	}
	ca, caKey, caPEM, err := loadOrCreateCA(dir, now)
	if err != nil {
		return nil, err
	}
	server, err := loadOrIssueServer(dir, ca, caKey, serverSANs(hosts), now)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &Authority{
		root:      ca,
		caPEM:     caPEM,
		clientCAs: pool,
		server:    server,
		issuer:    ca,
		issuerKey: caKey,
	}, nil
}

func loadOrCreateCA(dir string, now time.Time) (*x509.Certificate, crypto.Signer, []byte, error) {
	certPath, keyPath := filepath.Join(dir, CAFile), filepath.Join(dir, CAKeyFile)
	haveCert, err := exists(certPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca certificate: %w", err)
	}
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca key: %w", err)
	}
	switch {
	case haveCert && haveKey:
		return loadCA(certPath, keyPath, now)
	case haveCert:
		return nil, nil, nil, fmt.Errorf("%s exists without %s: restore the key, or remove both to create a new CA (every device must then re-enrol)", certPath, CAKeyFile)
	}
	var key crypto.Signer
	if haveKey {
		if key, err = readKey(keyPath); err != nil {
			return nil, nil, nil, fmt.Errorf("ca key: %w", err)
		}
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("generate ca key: %w", err)
		}
		keyPEM, err := encodeKey(k)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
			return nil, nil, nil, err
		}
		key = k
	}
	ca, err := newCACert(key, now)
	if err != nil {
		return nil, nil, nil, err
	}
	caPEM := encodeCert(ca.Raw)
	if err := writeFileAtomic(certPath, caPEM, 0o644); err != nil {
		return nil, nil, nil, err
	}
	return ca, key, caPEM, nil
}

func loadCA(certPath, keyPath string, now time.Time) (*x509.Certificate, crypto.Signer, []byte, error) {
	certs, caPEM, err := readCerts(certPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca certificate: %w", err)
	}
	key, err := readKey(keyPath)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("ca key: %w", err)
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, nil, fmt.Errorf("%s: not a ca certificate", certPath)
	}
	if !keyMatches(ca, key) {
		return nil, nil, nil, fmt.Errorf("%s does not belong to %s", keyPath, certPath)
	}
	if now.After(ca.NotAfter) {
		return nil, nil, nil, fmt.Errorf("%s expired on %s: remove %s and %s to create a new CA (every device must then re-enrol)",
			certPath, ca.NotAfter.Format(time.DateOnly), CAFile, CAKeyFile)
	}
	return ca, key, caPEM, nil
}

func newCACert(key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	suffix := make([]byte, 4)
	if _, err := rand.Read(suffix); err != nil {
		return nil, fmt.Errorf("ca name: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Flotilla CA " + hex.EncodeToString(suffix), Organization: []string{"Flotilla"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// loadOrIssueServer returns the server certificate in dir, issuing a new one
// when it is missing or no longer fit. Files that exist but do not parse
// are an error.
func loadOrIssueServer(dir string, ca *x509.Certificate, caKey crypto.Signer, sans sanSet, now time.Time) (tls.Certificate, error) {
	certPath, keyPath := filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile)
	haveCert, err := exists(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
	}
	haveKey, err := exists(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server key: %w", err)
	}
	if haveCert && haveKey {
		certs, _, err := readCerts(certPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("server certificate: %w", err)
		}
		key, err := readKey(keyPath)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("server key: %w", err)
		}
		if leaf := certs[0]; serverFit(leaf, key, ca, sans, now) {
			return serverPair(leaf, key, ca), nil
		}
	}
	// Missing, half-written (a crash between key and certificate), expiring,
	// from another CA, or lacking a host: issue a new one.
	return issueServer(certPath, keyPath, ca, caKey, sans, now)
}

// serverFit reports whether a stored server certificate can be used as is.
func serverFit(leaf *x509.Certificate, key crypto.Signer, ca *x509.Certificate, sans sanSet, now time.Time) bool {
	return keyMatches(leaf, key) &&
		leaf.CheckSignatureFrom(ca) == nil &&
		!now.Before(leaf.NotBefore) &&
		now.Add(RenewBefore).Before(leaf.NotAfter) &&
		sans.coveredBy(leaf)
}

func issueServer(certPath, keyPath string, ca *x509.Certificate, caKey crypto.Signer, sans sanSet, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate server key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return tls.Certificate{}, err
	}
	notAfter := now.Add(serverValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "flotilla-server", Organization: []string{"Flotilla"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     sans.dns,
		IPAddresses:  sans.ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("create server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse server certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	// Key first: a crash before the certificate is written leaves a
	// mismatched pair, which the next start re-issues.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := writeFileAtomic(certPath, encodeCert(der), 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return serverPair(leaf, key, ca), nil
}

// serverPair is what the server presents: its certificate, then the CA's,
// so a client that pins the CA's fingerprint finds it in the chain.
func serverPair(leaf *x509.Certificate, key crypto.Signer, ca *x509.Certificate) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{leaf.Raw, ca.Raw}, PrivateKey: key, Leaf: leaf}
}

// randomSerial returns a positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // keep 127 significant bits so serials are all the same length
	return new(big.Int).SetBytes(b), nil
}
