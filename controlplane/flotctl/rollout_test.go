package flotctl_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
)

// TestRolloutUsage: malformed rollout commands exit 2 with a message
// naming the problem, and an oversized spec file is refused, before any
// request is made (the server address is unreachable).
func TestRolloutUsage(t *testing.T) {
	env := map[string]string{
		"FLOTILLA_SERVER":         "https://127.0.0.1:1",
		"FLOTILLA_TOKEN":          "flt_x",
		"FLOTILLA_CA_FINGERPRINT": strings.Repeat("AB:", 31) + "AB",
	}
	big := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), 257<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"rollout"}, 2, "rollout create|list"},
		{[]string{"rollout", "explode"}, 2, "unknown rollout command"},
		{[]string{"rollout", "create"}, 2, "rollout create -f"},
		{[]string{"rollout", "create", "-f", "a.yaml", "extra"}, 2, "rollout create -f"},
		{[]string{"rollout", "show"}, 2, "one ID"},
		{[]string{"rollout", "abort", "a", "b"}, 2, "one ID"},
		{[]string{"rollout", "watch", "ro-1", "-every", "1ms"}, 2, "-every"},
		{[]string{"rollout", "pause", "-reason"}, 2, "flag needs an argument"},
		{[]string{"rollout", "create", "-f", big}, 1, "over 262144 bytes"},
		{[]string{"rollout", "create", "-f", filepath.Join(t.TempDir(), "missing.yaml")}, 1, "no such file"},
	} {
		var out, errOut bytes.Buffer
		code := flotctl.Run(context.Background(), c.args, flotctl.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		if code != c.code || !strings.Contains(errOut.String(), c.want) {
			t.Errorf("%v: exit %d, %q; want %d and %q", c.args, code, errOut.String(), c.code, c.want)
		}
	}
}
