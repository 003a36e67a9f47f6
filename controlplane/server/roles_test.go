package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
)

// TestRolesOverHTTPS: against a running control plane, over HTTPS, every
// route of the published OpenAPI document that changes state refuses a
// viewer token with 403 and no token with 401; every admin route refuses
// an operator; refusals write nothing to the audit log; what an admin
// changes is audited under the token's name; and the store keeps API
// tokens and console passwords only as hashes.
func TestRolesOverHTTPS(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir)
	ctx := context.Background()
	admin := adminClient(t, srv, dir)
	viewer, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "dash", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	operator, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "ci", Role: "operator"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.PinnedClientTLS(srv.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	do := func(token, method, path string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, srv.APIURL()+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	code, body := do("", "GET", "/v1/openapi.json")
	if code != 200 {
		t.Fatalf("openapi: %d", code)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Role string `json:"x-role"`
		} `json:"paths"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatal(err)
	}
	auditBefore, err := admin.Audit(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	fill := strings.NewReplacer("{id}", "dev-x", "{name}", "nobody", "{sha256}", strings.Repeat("0", 64))
	var mutating, adminOnly int
	for p, ops := range doc.Paths {
		for m, op := range ops {
			method, path := strings.ToUpper(m), fill.Replace(p)
			if op.Role == "admin" {
				adminOnly++
				if code, body := do(operator.Token, method, path); code != http.StatusForbidden {
					t.Errorf("operator %s %s: %d %s, want 403", method, path, code, body)
				}
			}
			if method == "GET" || op.Role == "public" {
				continue
			}
			mutating++
			if op.Role == "viewer" {
				t.Errorf("%s %s changes state but needs only the viewer role", method, p)
			}
			if code, body := do(viewer.Token, method, path); code != http.StatusForbidden {
				t.Errorf("viewer %s %s: %d %s, want 403", method, path, code, body)
			}
			if code, _ := do("", method, path); code != http.StatusUnauthorized {
				t.Errorf("anonymous %s %s: %d, want 401", method, path, code)
			}
		}
	}
	// The routes this test must have seen: rollout actions, labels,
	// tokens, keys (the release metadata), users.
	for _, want := range []string{"/v1/rollouts/{id}/pause", "/v1/devices/{id}/labels", "/v1/tokens", "/v1/releases/metadata", "/v1/users/{name}"} {
		if _, ok := doc.Paths[want]; !ok {
			t.Errorf("the OpenAPI document lacks %s", want)
		}
	}
	if mutating < 15 || adminOnly < 8 {
		t.Errorf("only %d mutating and %d admin routes checked", mutating, adminOnly)
	}
	auditAfter, err := admin.Audit(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(auditAfter) != len(auditBefore) {
		t.Errorf("refused requests wrote %d audit entries: %+v", len(auditAfter)-len(auditBefore), auditAfter[0])
	}
	// A viewer still reads.
	if code, body := do(viewer.Token, "GET", "/v1/devices"); code != 200 {
		t.Errorf("viewer GET /v1/devices: %d %s", code, body)
	}

	// An admin's changes are audited under the token.
	if _, err := admin.CreateUser(ctx, api.UserRequest{Name: "olivia", Role: "operator", Password: "a long password"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.UpdateUser(ctx, "olivia", api.UserPatch{Role: "viewer"}); err != nil {
		t.Fatal(err)
	}
	if err := admin.DisableUser(ctx, "olivia"); err != nil {
		t.Fatal(err)
	}
	if err := admin.RevokeAPIToken(ctx, viewer.ID); err != nil {
		t.Fatal(err)
	}
	if code, _ := do(viewer.Token, "GET", "/v1/devices"); code != http.StatusUnauthorized {
		t.Errorf("revoked token: %d, want 401", code)
	}
	entries, err := admin.Audit(ctx, 6) // the newest six: before them, the server made the initial token
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Actor, "token:initial admin(") {
			t.Errorf("audit entry %s by %q, want the admin token", e.Action, e.Actor)
		}
		got = append(got, e.Action)
	}
	want := "api-token.revoke user.disable user.update user.create api-token.create api-token.create"
	if strings.Join(got, " ") != want {
		t.Errorf("audit actions %v, want %s", got, want)
	}

	// At rest: tokens as SHA-256, passwords as argon2id.
	toks, err := srv.Store().ListAPITokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range toks {
		if tk.ID == operator.ID {
			if h := sha256.Sum256([]byte(operator.Token)); string(tk.Hash) != string(h[:]) {
				t.Error("the operator token is not stored as its SHA-256")
			}
		}
	}
	u, err := srv.Store().User(ctx, "olivia")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u.PasswordHash, "$argon2id$") || strings.Contains(u.PasswordHash, "a long password") {
		t.Errorf("password stored as %q", u.PasswordHash)
	}
}
