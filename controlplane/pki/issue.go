package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"time"
)

// IssueDeviceCert signs a client certificate for a device's own ed25519
// public key: CN = deviceID, ExtKeyUsage ClientAuth, valid from an hour
// before now for ttl (never past the CA's own expiry). The device keeps its
// private key. serial is the certificate's serial number in lower-case hex
// (big.Int.Text(16)), which the registry records to revoke the certificate.
// It returns [ErrNoCAKey] when the authority holds no CA key.
func (a *Authority) IssueDeviceCert(deviceID string, pub ed25519.PublicKey, ttl time.Duration, now time.Time) (certPEM []byte, serial string, err error) {
	if a.issuerKey == nil {
		return nil, "", ErrNoCAKey
	}
	if deviceID == "" {
		return nil, "", errors.New("issue device certificate: empty device id")
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, "", fmt.Errorf("issue device certificate: public key is %d bytes, want %d", len(pub), ed25519.PublicKeySize)
	}
	if ttl <= 0 {
		return nil, "", fmt.Errorf("issue device certificate: ttl %v is not positive", ttl)
	}
	sn, err := randomSerial()
	if err != nil {
		return nil, "", err
	}
	notAfter := now.Add(ttl)
	if notAfter.After(a.issuer.NotAfter) {
		notAfter = a.issuer.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: deviceID, Organization: []string{"Flotilla devices"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.issuer, pub, a.issuerKey)
	if err != nil {
		return nil, "", fmt.Errorf("issue device certificate: %w", err)
	}
	return encodeCert(der), sn.Text(16), nil
}
