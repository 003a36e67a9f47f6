package pki

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPinnedClientTLS(t *testing.T) {
	dir := t.TempDir()
	a := mustCreate(t, dir, []string{"broker.test"}, time.Now())
	other := mustCreate(t, t.TempDir(), []string{"broker.test"}, time.Now())
	fromFiles, err := FromFiles(filepath.Join(dir, ServerFile), filepath.Join(dir, ServerKeyFile), filepath.Join(dir, CAFile))
	if err != nil {
		t.Fatal(err)
	}
	bare := strings.ToLower(strings.ReplaceAll(a.Fingerprint(), ":", ""))
	for _, tc := range []struct {
		name, pin, host string
		server          *Authority
		ok              bool
	}{
		{"pinned CA", a.Fingerprint(), "broker.test", a, true},
		{"lower case, no colons, prefix", "sha256:" + bare, "broker.test", a, true},
		{"operator files serve the root", a.Fingerprint(), "localhost", fromFiles, true},
		{"another CA", other.Fingerprint(), "broker.test", a, false},
		{"another server", a.Fingerprint(), "broker.test", other, false},
		{"wrong host", a.Fingerprint(), "elsewhere.test", a, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := PinnedClientTLS(tc.pin)
			if err != nil {
				t.Fatal(err)
			}
			cfg.ServerName = tc.host
			_, _, ce := handshake(t, tc.server.ServerTLS(), cfg)
			if (ce == nil) != tc.ok {
				t.Fatalf("client handshake: %v, want ok=%v", ce, tc.ok)
			}
		})
	}
	for _, bad := range []string{"", "zz", a.Fingerprint()[:20]} {
		if _, err := PinnedClientTLS(bad); err == nil {
			t.Errorf("accepted fingerprint %q", bad)
		}
	}
}
