// Package supportsig is the detached signature of a Flotilla support
// bundle: the device key signs the bundle's SHA-256, and the device's
// client certificate, when it has one, binds that key to the device ID
// under the fleet CA. The agent signs (agent/diag); flotilla-agent diag
// verify-bundle and the control plane (controlplane/supportbundle, for
// bundles devices upload) verify.
package supportsig

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
)

const (
	// Format is the signature file's format.
	Format = "flotilla-support-bundle-signature/1"
	// MaxSize caps a signature file read for verification.
	MaxSize = 16 << 10
)

// signingContext separates a bundle signature from anything else the
// device key signs (the TLS handshake, enrolment).
const signingContext = "flotilla support bundle v1\n"

// Signature is a support bundle's detached signature (FILE.sig, JSON).
// The device key signs the bundle's SHA-256; the device's client
// certificate, when it has one, binds that key to the device ID under the
// fleet CA, so support can trust a bundle without trusting its sender.
type Signature struct {
	Format         string `json:"format"`
	DeviceID       string `json:"device_id,omitempty"`
	SHA256         string `json:"sha256"`
	PublicKey      string `json:"public_key"` // base64 ed25519
	Signature      string `json:"signature"`  // base64 ed25519 over signingContext + sha256 hex
	CertificatePEM string `json:"certificate_pem,omitempty"`
}

// Sign signs a bundle with the device key.
func Sign(bundle []byte, key ed25519.PrivateKey, deviceID string, certPEM []byte) Signature {
	sum := sha256.Sum256(bundle)
	h := hex.EncodeToString(sum[:])
	return Signature{Format: Format, DeviceID: deviceID, SHA256: h,
		PublicKey: base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, []byte(signingContext+h))), CertificatePEM: string(certPEM)}
}

// Errors of Verify.
var (
	ErrTampered   = errors.New("support bundle does not match its signature")
	ErrUntrusted  = errors.New("support bundle signed by a key not trusted")
	ErrBadSigFile = errors.New("support bundle signature file is malformed")
)

// Trust says which keys Verify accepts. With neither set, a bundle that
// is merely self-consistent (signed by the key its signature names) is
// accepted and Verified.Trusted is false.
type Trust struct {
	PublicKey ed25519.PublicKey // the device's key, as the control plane knows it
	Roots     *x509.CertPool    // the fleet CA: the signature's certificate must chain to it and name the device
}

// Verified is what Verify established.
type Verified struct {
	DeviceID string
	Trusted  bool // by Trust, not only self-consistent
	How      string
}

// Parse decodes a signature file.
func Parse(b []byte) (Signature, error) {
	var s Signature
	if len(b) > MaxSize {
		return s, fmt.Errorf("%w: over %d bytes", ErrBadSigFile, MaxSize)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%w: %w", ErrBadSigFile, err)
	}
	if s.Format != Format {
		return s, fmt.Errorf("%w: format %q", ErrBadSigFile, s.Format)
	}
	return s, nil
}

// Verify checks bundle against sig: the digest, the signature, and the
// signing key against trust.
func Verify(bundle []byte, sig Signature, trust Trust) (Verified, error) {
	return VerifyDigest(sha256.Sum256(bundle), sig, trust)
}

// VerifyDigest is Verify for a bundle whose SHA-256 the caller computed
// (streaming it rather than holding it whole).
func VerifyDigest(sum [sha256.Size]byte, sig Signature, trust Trust) (Verified, error) {
	v := Verified{DeviceID: sig.DeviceID}
	h := hex.EncodeToString(sum[:])
	if h != sig.SHA256 {
		return v, fmt.Errorf("%w: its SHA-256 is %s, the signature's %s", ErrTampered, h, sig.SHA256)
	}
	pub, err := base64.StdEncoding.DecodeString(sig.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return v, fmt.Errorf("%w: public key", ErrBadSigFile)
	}
	raw, err := base64.StdEncoding.DecodeString(sig.Signature)
	if err != nil || len(raw) != ed25519.SignatureSize {
		return v, fmt.Errorf("%w: signature", ErrBadSigFile)
	}
	if !ed25519.Verify(pub, []byte(signingContext+h), raw) {
		return v, fmt.Errorf("%w: the signature is not the named key's", ErrTampered)
	}
	v.How = "self-consistent only: the signing key is the one the signature names"
	if trust.PublicKey != nil {
		if !trust.PublicKey.Equal(ed25519.PublicKey(pub)) {
			return v, fmt.Errorf("%w: signed by %s", ErrUntrusted, sig.PublicKey)
		}
		v.Trusted, v.How = true, "signed by the given device key"
	}
	if trust.Roots != nil {
		blk, _ := pem.Decode([]byte(sig.CertificatePEM))
		if blk == nil {
			return v, fmt.Errorf("%w: the signature carries no device certificate", ErrUntrusted)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return v, fmt.Errorf("%w: device certificate: %w", ErrUntrusted, err)
		}
		// Checked as of its issue: a bundle stays verifiable after the
		// certificate expires; what matters is that the fleet CA issued it.
		if _, err := cert.Verify(x509.VerifyOptions{Roots: trust.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}, CurrentTime: cert.NotBefore}); err != nil {
			return v, fmt.Errorf("%w: device certificate: %w", ErrUntrusted, err)
		}
		ck, ok := cert.PublicKey.(ed25519.PublicKey)
		if !ok || !ck.Equal(ed25519.PublicKey(pub)) {
			return v, fmt.Errorf("%w: the device certificate is for another key", ErrUntrusted)
		}
		if cert.Subject.CommonName != sig.DeviceID {
			return v, fmt.Errorf("%w: the certificate names device %q, the signature %q", ErrUntrusted, cert.Subject.CommonName, sig.DeviceID)
		}
		v.Trusted, v.How = true, "signed by the key of device "+sig.DeviceID+"'s certificate, issued by the given CA"
	}
	return v, nil
}
