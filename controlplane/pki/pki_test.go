package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustCreate(t *testing.T, dir string, hosts []string, now time.Time) *Authority {
	t.Helper()
	a, err := LoadOrCreate(dir, hosts, now)
	if err != nil {
		t.Fatalf("LoadOrCreate: %v", err)
	}
	return a
}

func TestCreateThenReload(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	a := mustCreate(t, dir, nil, t0)
	if !strings.HasPrefix(a.CACert().Subject.CommonName, "Flotilla CA ") || len(a.CACert().Subject.CommonName) <= len("Flotilla CA ") {
		t.Errorf("CA name %q", a.CACert().Subject.CommonName)
	}
	if !a.CACert().IsCA || !a.CACert().MaxPathLenZero || a.CACert().MaxPathLen != 0 {
		t.Error("CA certificate is not a path-length-0 CA")
	}
	if n := len(strings.Split(a.Fingerprint(), ":")); n != 32 {
		t.Errorf("fingerprint %q has %d parts", a.Fingerprint(), n)
	}
	b := mustCreate(t, dir, nil, t0.Add(24*time.Hour))
	if a.Fingerprint() != b.Fingerprint() || !bytes.Equal(a.CAPEM(), b.CAPEM()) {
		t.Error("reload made a different CA")
	}
	if a.ServerCert().SerialNumber.Cmp(b.ServerCert().SerialNumber) != 0 {
		t.Error("reload re-issued a fit server certificate")
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, ServerKeyFile: 0o600, CAFile: 0o644, ServerFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("folder mode %v, want 0700", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestServerCertReissuedNearExpiry(t *testing.T) {
	dir := t.TempDir()
	a := mustCreate(t, dir, nil, t0)
	soon := a.ServerCert().NotAfter.Add(-RenewBefore + time.Hour)
	b := mustCreate(t, dir, nil, soon)
	if a.ServerCert().SerialNumber.Cmp(b.ServerCert().SerialNumber) == 0 {
		t.Fatal("server certificate within 30 days of expiry was not re-issued")
	}
	if a.Fingerprint() != b.Fingerprint() {
		t.Error("renewal changed the CA")
	}
	if !b.ServerCert().NotAfter.After(soon.Add(300 * 24 * time.Hour)) {
		t.Errorf("new certificate expires %v", b.ServerCert().NotAfter)
	}
	c := mustCreate(t, dir, nil, soon)
	if c.ServerCert().SerialNumber.Cmp(b.ServerCert().SerialNumber) != 0 {
		t.Error("renewed certificate was not kept")
	}
}

func TestServerCertReissuedForMissingHost(t *testing.T) {
	dir := t.TempDir()
	a := mustCreate(t, dir, []string{"mqtt.example.com"}, t0)
	leaf := a.ServerCert()
	for _, want := range []string{"mqtt.example.com", "localhost"} {
		if leaf.VerifyHostname(want) != nil {
			t.Errorf("server certificate does not name %s: %v", want, leaf.DNSNames)
		}
	}
	for _, ip := range []string{"127.0.0.1", "::1"} {
		if leaf.VerifyHostname(ip) != nil {
			t.Errorf("server certificate does not name %s", ip)
		}
	}
	if h, err := os.Hostname(); err == nil && leaf.VerifyHostname(h) != nil {
		t.Errorf("server certificate does not name the host name %s", h)
	}
	same := mustCreate(t, dir, []string{"MQTT.example.com:8883"}, t0)
	if same.ServerCert().SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Error("re-issued although every host was present")
	}
	b := mustCreate(t, dir, []string{"mqtt.example.com", "10.1.2.3", "[fd00::7]:8883"}, t0)
	if b.ServerCert().SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("not re-issued for a missing host")
	}
	for _, h := range []string{"mqtt.example.com", "10.1.2.3", "fd00::7"} {
		if err := b.ServerCert().VerifyHostname(h); err != nil {
			t.Errorf("new certificate: %v", err)
		}
	}
}

func TestDeviceCert(t *testing.T) {
	a := mustCreate(t, t.TempDir(), nil, t0)
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, serial, err := a.IssueDeviceCert("dev-42", pub, 90*24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.CAPEM())
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: t0.Add(time.Hour), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("device certificate does not verify for client auth: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: t0.Add(time.Hour), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("device certificate verifies for server auth")
	}
	if got, ok := cert.PublicKey.(ed25519.PublicKey); !ok || !got.Equal(pub) {
		t.Error("device certificate does not carry the device's key")
	}
	if cert.Subject.CommonName != "dev-42" || serial != cert.SerialNumber.Text(16) {
		t.Errorf("CN %q serial %q (cert %s)", cert.Subject.CommonName, serial, cert.SerialNumber.Text(16))
	}
	if !cert.NotAfter.Equal(t0.Add(90 * 24 * time.Hour)) {
		t.Errorf("expires %v", cert.NotAfter)
	}
	for _, bad := range []struct {
		id  string
		pub ed25519.PublicKey
		ttl time.Duration
	}{{"", pub, time.Hour}, {"d", pub[:5], time.Hour}, {"d", pub, 0}} {
		if _, _, err := a.IssueDeviceCert(bad.id, bad.pub, bad.ttl, t0); err == nil {
			t.Errorf("issued for %q, %d-byte key, ttl %v", bad.id, len(bad.pub), bad.ttl)
		}
	}
}

// snapshot returns every file in dir with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}

func TestCorruptFilesAreReportedNotOverwritten(t *testing.T) {
	for _, name := range []string{CAFile, CAKeyFile, ServerFile, ServerKeyFile} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			mustCreate(t, dir, nil, t0)
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte("-----BEGIN GARBAGE\nnot pem"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := snapshot(t, dir)
			_, err := LoadOrCreate(dir, []string{"new.example.com"}, t0)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("err = %v, want one naming %s", err, name)
			}
			if after := snapshot(t, dir); len(after) != len(before) {
				t.Errorf("files changed: %d before, %d after", len(before), len(after))
			} else {
				for k, v := range before {
					if after[k] != v {
						t.Errorf("%s was overwritten", k)
					}
				}
			}
		})
	}
}

func TestCAHalfWritten(t *testing.T) {
	dir := t.TempDir()
	a := mustCreate(t, dir, nil, t0)
	// A crash between writing the key and the certificate: the key is kept.
	if err := os.Remove(filepath.Join(dir, CAFile)); err != nil {
		t.Fatal(err)
	}
	b := mustCreate(t, dir, nil, t0)
	if !b.CACert().PublicKey.(*ecdsa.PublicKey).Equal(a.CACert().PublicKey) {
		t.Error("the surviving CA key was not reused")
	}
	if b.ServerCert().CheckSignatureFrom(b.CACert()) != nil {
		t.Error("server certificate not signed by the current CA")
	}
	// A certificate without its key cannot be recovered.
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(dir, nil, t0); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Errorf("err = %v, want one naming %s", err, CAKeyFile)
	}
}

func TestExpiredCA(t *testing.T) {
	dir := t.TempDir()
	a := mustCreate(t, dir, nil, t0)
	if _, err := LoadOrCreate(dir, nil, a.CACert().NotAfter.Add(time.Hour)); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("err = %v, want expiry", err)
	}
}

// handshake runs a TLS handshake over a pipe and returns both sides' errors
// and the client certificates the server saw.
func handshake(t *testing.T, server, client *tls.Config) (peer []*x509.Certificate, serverErr, clientErr error) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srv := tls.Server(c1, server)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		c1.Close() // unblock the client if the server gave up
		done <- err
	}()
	clientErr = tls.Client(c2, client).Handshake()
	c2.Close()
	select {
	case serverErr = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server handshake hung")
	}
	return srv.ConnectionState().PeerCertificates, serverErr, clientErr
}

func TestHandshake(t *testing.T) {
	a := mustCreate(t, t.TempDir(), []string{"broker.test"}, time.Now())
	cfg, err := ClientTLS(a.CAPEM(), "broker.test")
	if err != nil {
		t.Fatal(err)
	}
	if _, se, ce := handshake(t, a.ServerTLS(), cfg); se != nil || ce != nil {
		t.Fatalf("handshake: server %v, client %v", se, ce)
	}

	// With a device certificate (mTLS): the server sees it verified.
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	certPEM, _, err := a.IssueDeviceCert("dev-1", pub, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := encodeKey(priv)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	mtls := cfg.Clone()
	mtls.Certificates = []tls.Certificate{pair}
	peer, se, ce := handshake(t, a.ServerTLS(), mtls)
	if se != nil || ce != nil || len(peer) == 0 || peer[0].Subject.CommonName != "dev-1" {
		t.Fatalf("mTLS handshake: server %v, client %v, peer %d certs", se, ce, len(peer))
	}

	// A client certificate from another CA is refused by the server.
	other := mustCreate(t, t.TempDir(), nil, time.Now())
	foreignPEM, _, _ := other.IssueDeviceCert("dev-1", pub, time.Hour, time.Now())
	foreign, _ := tls.X509KeyPair(foreignPEM, keyPEM)
	// Go's client would not offer it (the server names its CA), so force it.
	mtls.Certificates = nil
	mtls.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign, nil }
	if _, se, _ := handshake(t, a.ServerTLS(), mtls); se == nil {
		t.Error("server accepted a client certificate from a foreign CA")
	}

	// A client that trusts another CA refuses the server.
	foreignCfg, _ := ClientTLS(other.CAPEM(), "broker.test")
	_, _, ce = handshake(t, a.ServerTLS(), foreignCfg)
	var unknown x509.UnknownAuthorityError
	if !errors.As(ce, &unknown) {
		t.Errorf("client with a foreign CA: %v, want unknown authority", ce)
	}
	// And one that expects another name.
	wrongName, _ := ClientTLS(a.CAPEM(), "elsewhere.test")
	if _, _, ce := handshake(t, a.ServerTLS(), wrongName); ce == nil {
		t.Error("client accepted a certificate for another name")
	}
	if _, err := ClientTLS([]byte("nothing"), "x"); err == nil {
		t.Error("ClientTLS accepted a PEM without certificates")
	}
}

func TestFromFiles(t *testing.T) {
	dir := t.TempDir()
	own := mustCreate(t, dir, nil, time.Now())
	p := func(n string) string { return filepath.Join(dir, n) }

	a, err := FromFiles(p(ServerFile), p(ServerKeyFile), p(CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint() != own.Fingerprint() {
		t.Error("fingerprint differs from the CA's")
	}
	if a.CanIssue() {
		t.Error("CanIssue without a CA key")
	}
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	if _, _, err := a.IssueDeviceCert("d", pub, time.Hour, time.Now()); !errors.Is(err, ErrNoCAKey) {
		t.Errorf("issue without key: %v", err)
	}
	b, err := a.WithCAKey(p(CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !b.CanIssue() || a.CanIssue() {
		t.Error("WithCAKey did not give a separate issuing copy")
	}
	if _, _, err := b.IssueDeviceCert("d", pub, time.Hour, time.Now()); err != nil {
		t.Error(err)
	}
	if _, err := a.WithCAKey(p(ServerKeyFile)); err == nil {
		t.Error("WithCAKey accepted the server key")
	}
	// A server certificate that devices could not verify is refused.
	other := t.TempDir()
	mustCreate(t, other, nil, time.Now())
	if _, err := FromFiles(p(ServerFile), p(ServerKeyFile), filepath.Join(other, CAFile)); err == nil {
		t.Error("accepted a CA file that does not verify the server certificate")
	}
	if _, err := FromFiles(p(ServerFile), filepath.Join(other, ServerKeyFile), p(CAFile)); err == nil {
		t.Error("accepted a key that does not match the certificate")
	}
	// Only certificates from the CA file reach devices.
	mixed := filepath.Join(t.TempDir(), "ca-bundle.pem")
	key, _ := os.ReadFile(p(CAKeyFile))
	if err := os.WriteFile(mixed, append(own.CAPEM(), key...), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := FromFiles(p(ServerFile), p(ServerKeyFile), mixed)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(m.CAPEM(), []byte("PRIVATE KEY")) {
		t.Error("CAPEM carries a private key from the CA file")
	}
}
