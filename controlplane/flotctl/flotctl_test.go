package flotctl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

// TestOperatorSession drives a real in-process control plane through
// flotctl as an operator would, human and JSON output alike.
func TestOperatorSession(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	storetest.Enrol(t, s.Store(), 2, func(i int) map[string]string { return map[string]string{"site": "lab"} })

	env := map[string]string{
		"FLOTILLA_SERVER":         s.APIURL(),
		"FLOTILLA_TOKEN_FILE":     filepath.Join(dir, server.AdminTokenFile),
		"FLOTILLA_CA_FINGERPRINT": s.CAFingerprint(),
	}
	run := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		code := flotctl.Run(ctx, args, flotctl.Env{Stdout: &out, Stderr: &errOut, Getenv: func(k string) string { return env[k] }})
		return code, out.String(), errOut.String()
	}

	code, out, errOut := run("devices", "list")
	if code != 0 || !strings.Contains(out, "dev-000") || !strings.Contains(out, "site=lab") {
		t.Fatalf("devices list: %d %q %q", code, out, errOut)
	}
	code, out, _ = run("-json", "devices", "label", "dev-001", "ring=canary", "-site")
	var dv api.DeviceView
	if code != 0 || json.Unmarshal([]byte(out), &dv) != nil || dv.Labels["ring"] != "canary" || dv.Labels["site"] != "" {
		t.Fatalf("label: %d %q", code, out)
	}
	code, out, _ = run("-json", "devices", "list", "-selector", "ring=canary")
	var list []api.DeviceView
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].ID != "dev-001" {
		t.Fatalf("selector: %d %q", code, out)
	}

	// A viewer token made through flotctl can read but not change.
	code, out, _ = run("-json", "tokens", "create", "-name", "dashboard", "-role", "viewer")
	var created api.APITokenCreated
	if code != 0 || json.Unmarshal([]byte(out), &created) != nil || created.Token == "" {
		t.Fatalf("tokens create: %d %q", code, out)
	}
	env["FLOTILLA_TOKEN"] = created.Token
	if code, _, _ := run("devices", "show", "dev-000"); code != 0 {
		t.Fatalf("viewer show: %d", code)
	}
	if code, _, errOut := run("devices", "decommission", "dev-000"); code != 1 || !strings.Contains(errOut, "403") {
		t.Fatalf("viewer decommission: %d %q", code, errOut)
	}
	delete(env, "FLOTILLA_TOKEN")

	code, out, _ = run("enrol-tokens", "create", "-name", "factory", "-max-uses", "100", "-label", "batch=7")
	if code != 0 || !strings.Contains(out, "flt_enrol_") {
		t.Fatalf("enrol-tokens create: %d %q", code, out)
	}
	if code, out, _ := run("audit"); code != 0 || !strings.Contains(out, "device.label") || !strings.Contains(out, "enrol-token.create") {
		t.Fatalf("audit: %d %q", code, out)
	}

	// Usage errors exit 2 and say what is wrong; a wrong CA pin refuses.
	if code, _, errOut := run("devices", "frobnicate"); code != 2 || !strings.Contains(errOut, "frobnicate") {
		t.Fatalf("unknown verb: %d %q", code, errOut)
	}
	env["FLOTILLA_CA_FINGERPRINT"] = strings.Repeat("AB:", 31) + "AB"
	if code, _, errOut := run("devices", "list"); code != 1 || !strings.Contains(errOut, "pinned") {
		t.Fatalf("wrong pin: %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, server.AdminTokenFile)); err != nil {
		t.Fatal(err)
	}
}
