package diag

import (
	"crypto/ed25519"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, secret, keep string }{
		{`enrol_token = "abc123"`, "abc123", "enrol_token"},
		{`level=WARN msg=x password=hunter2 next=1`, "hunter2", "next=1"},
		{`{"mqtt_password":"p\"w","device":"d"}`, `p\"w`, `"device":"d"`},
		{`Authorization: Bearer eyJhbGciOi.x.y`, "eyJhbGciOi", "Authorization"},
		{`dial mqtts://dev:pa55@broker:8883 failed`, "pa55", "broker:8883"},
		{"key\n-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEI\n-----END PRIVATE KEY-----\n", "MC4CAQAwBQYDK2VwBCIEI", "key"},
		{"API_KEY: zzz", "zzz", "API_KEY"},
	} {
		got := string(Redact([]byte(c.in)))
		if strings.Contains(got, c.secret) || !strings.Contains(got, c.keep) || !strings.Contains(got, Redacted) {
			t.Errorf("Redact(%q) = %q", c.in, got)
		}
	}
	if got := string(Redact([]byte(`ca_fingerprint = "AB:CD" device_id = "x"`))); strings.Contains(got, Redacted) {
		t.Errorf("redacted what is no secret: %q", got)
	}
}

// TestListenModes: group flotilla (here: the test's own group) gets
// 0660 and the group; without it, 0600. A file that is not a socket is
// never replaced.
func TestListenModes(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "g.sock")
	l, err := listen(p, os.Getgid())
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o660 {
		t.Errorf("with the group: %v", fi.Mode())
	}
	l.Close()
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("socket left after Close: %v", err)
	}
	l, err = listen(p, -1)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("without the group: %v", fi.Mode())
	}
	// A stale socket (the agent was killed) is replaced.
	l.(*unlinking).UnixListener.Close()
	l2, err := listen(p, -1)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	l2.Close()
	regular := filepath.Join(dir, "file")
	os.WriteFile(regular, []byte("keep"), 0o600)
	if _, err := listen(regular, -1); err == nil {
		t.Error("listened over a regular file")
	}
	if b, _ := os.ReadFile(regular); string(b) != "keep" {
		t.Error("the regular file was changed")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("left behind: %v", ents)
	}
}

// FuzzSignature: any signature file is parsed and checked without a
// panic, and only the real one verifies.
func FuzzSignature(f *testing.F) {
	pub, key, _ := ed25519.GenerateKey(nil)
	bundle := []byte("bundle bytes")
	good, _ := json.Marshal(Sign(bundle, key, "dev", nil))
	f.Add(good)
	f.Add([]byte(`{"format":"flotilla-support-bundle-signature/1","sha256":"00","public_key":"AA==","signature":"AA=="}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		sig, err := ParseSignature(b)
		if err != nil {
			return
		}
		if _, err := Verify(bundle, sig, Trust{PublicKey: pub}); err == nil && string(b) != string(good) {
			// Another encoding of the same signature is fine; a different key is not.
			if sig.PublicKey != mustJSON(t, good).PublicKey {
				t.Fatalf("verified with another key: %s", b)
			}
		}
	})
}

func mustJSON(t *testing.T, b []byte) Signature {
	var s Signature
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return s
}
