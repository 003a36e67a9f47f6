package flotctl_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
)

// TestDriftUsage: contradictory or malformed drift and events arguments
// exit 2 with a message naming the problem, before any request is made
// (the server address is unreachable).
func TestDriftUsage(t *testing.T) {
	env := map[string]string{
		"FLOTILLA_SERVER":         "https://127.0.0.1:1",
		"FLOTILLA_TOKEN":          "flt_x",
		"FLOTILLA_CA_FINGERPRINT": strings.Repeat("AB:", 31) + "AB",
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"drift", "-device", "d", "-selector", "a=b"}, "not both"},
		{[]string{"drift", "-release", "2"}, "-release needs -model"},
		{[]string{"drift", "-since", "soon"}, "invalid value"},
		{[]string{"drift", "digits"}, "flags only"},
		{[]string{"drift", "-worst", "-1"}, "-worst"},
		{[]string{"drift", "-worst", "3", "-feature", "pixel_0"}, "not both"},
		{[]string{"devices", "events"}, "one ID"},
		{[]string{"devices", "events", "a", "b"}, "one ID"},
	} {
		var out, errOut bytes.Buffer
		code := flotctl.Run(context.Background(), c.args, flotctl.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		if code != 2 || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want 2 and %q", c.args, code, errOut.String(), c.want)
		}
	}
}
