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
	"github.com/flotilla-edge/flotilla/controlplane/password"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestUsersCommands: the first console admin is made with the server's
// initial admin token, the password read from a file (never the command
// line); the user's role and password change, and it is disabled.
func TestUsersCommands(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("first admin password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := run("users", "create", "ada", "-role", "admin", "-password-file", pwFile); code != 0 || !strings.Contains(out, "ada") {
		t.Fatalf("users create: %d %q %q", code, out, errOut)
	}
	u, err := s.Store().User(ctx, "ada")
	if err != nil || u.Role != "admin" || password.Check(u.PasswordHash, "first admin password") != nil {
		t.Fatalf("stored user %+v %v: the password from the file (without its newline) must match", u, err)
	}
	if code, _, errOut := run("users", "create", "bob"); code != 2 || !strings.Contains(errOut, "needs a password") {
		t.Errorf("create without a password: %d %q", code, errOut)
	}
	env["FLOTILLA_PASSWORD"] = "short"
	if code, _, errOut := run("users", "create", "bob"); code != 1 || !strings.Contains(errOut, "400") {
		t.Errorf("create with a short password: %d %q", code, errOut)
	}
	env["FLOTILLA_PASSWORD"] = "bob's new password"
	if code, _, errOut := run("users", "set", "ada", "-role", "operator"); code != 0 {
		t.Fatalf("users set: %d %q", code, errOut)
	}
	if u, _ := s.Store().User(ctx, "ada"); u.Role != "operator" || password.Check(u.PasswordHash, "bob's new password") != nil {
		t.Errorf("after set: %+v", u)
	}
	if code, _, errOut := run("users", "disable", "ada"); code != 0 {
		t.Fatalf("users disable: %d %q", code, errOut)
	}
	code, out, _ := run("-json", "users", "list")
	var list []api.UserView
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].DisabledAt == nil {
		t.Fatalf("users list: %d %q", code, out)
	}
	if strings.Contains(out, "argon2") {
		t.Error("users list shows the password hash")
	}
}
