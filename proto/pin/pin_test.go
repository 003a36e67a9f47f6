package pin_test

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/pin"
)

func TestFingerprintRoundTrip(t *testing.T) {
	der := []byte("cert")
	fp := pin.Fingerprint(der)
	if len(fp) != 95 || strings.ToUpper(fp) != fp || strings.Count(fp, ":") != 31 {
		t.Fatalf("Fingerprint = %q", fp)
	}
	want := sha256.Sum256(der)
	for _, s := range []string{fp, strings.ToLower(fp), strings.ReplaceAll(fp, ":", ""), "sha256:" + fp, " " + fp + " "} {
		got, err := pin.Parse(s)
		if err != nil || !bytes.Equal(got, want[:]) {
			t.Errorf("Parse(%q) = %x, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "AB:CD", "zz" + fp[2:], fp + "00", "sha256:"} {
		if _, err := pin.Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}
