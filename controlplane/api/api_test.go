package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

type fixture struct {
	srv    *httptest.Server
	store  *store.Store
	tokens map[string]string // role → secret
	api    *api.API
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := registry.New(registry.Config{Store: st})
	a := api.New(api.Config{Store: st, Registry: reg, Version: "test"})
	f := &fixture{srv: httptest.NewServer(a), store: st, tokens: map[string]string{}, api: a}
	t.Cleanup(f.srv.Close)
	for _, role := range []string{"viewer", "operator", "admin"} {
		secret, hash := api.NewSecret(api.APITokenPrefix)
		if err := st.CreateAPIToken(ctx, store.APIToken{ID: role, Name: role, Role: role, Hash: hash, CreatedAt: time.Now().UnixMilli()}); err != nil {
			t.Fatal(err)
		}
		f.tokens[role] = secret
	}
	storetest.Enrol(t, st, 3, func(i int) map[string]string { return map[string]string{"site": []string{"a", "b", "a"}[i]} })
	return f
}

func (f *fixture) do(t *testing.T, role, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	if role != "" {
		req.Header.Set("Authorization", "Bearer "+f.tokens[role])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

// routeCases is every route of the OpenAPI document with a concrete path.
func routeCases(t *testing.T, f *fixture) []struct{ method, path, role string } {
	doc := f.api.OpenAPI()
	var out []struct{ method, path, role string }
	for p, item := range doc["paths"].(map[string]any) {
		for m, op := range item.(map[string]any) {
			path := strings.NewReplacer("{id}", "dev-000").Replace(p)
			out = append(out, struct{ method, path, role string }{strings.ToUpper(m), path, op.(map[string]any)["x-role"].(string)})
		}
	}
	if len(out) < 15 {
		t.Fatalf("only %d routes in the OpenAPI document", len(out))
	}
	return out
}

// TestViewerCannotChangeAnything: every route that changes state needs at
// least the operator role, and a viewer token gets 403 on each, with the
// store unchanged.
func TestViewerCannotChangeAnything(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.store)
	for _, rc := range routeCases(t, f) {
		if rc.method == "GET" || rc.path == "/v1/enrol" {
			continue
		}
		if rc.role == "viewer" || rc.role == "public" {
			t.Errorf("%s %s changes state but needs only %s", rc.method, rc.path, rc.role)
		}
		body := map[string]any{}
		if code, data := f.do(t, "viewer", rc.method, rc.path, body); code != http.StatusForbidden {
			t.Errorf("viewer %s %s: %d %s, want 403", rc.method, rc.path, code, data)
		}
		if code, _ := f.do(t, "", rc.method, rc.path, body); code != http.StatusUnauthorized {
			t.Errorf("anonymous %s %s: %d, want 401", rc.method, rc.path, code)
		}
	}
	if after := snapshot(t, f.store); after != before {
		t.Fatalf("store changed:\nbefore %s\nafter  %s", before, after)
	}
}

// snapshot renders what an operator could change.
func snapshot(t *testing.T, s *store.Store) string {
	ctx := context.Background()
	devs, err := s.ListDevices(ctx, store.ListOptions{IncludeDecommissioned: true})
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := s.ListAPITokens(ctx)
	etoks, _ := s.ListEnrolTokens(ctx)
	audit, _ := s.ListAudit(ctx, 1000, 0)
	for i := range toks {
		toks[i].LastUsedAt = 0
	}
	b, _ := json.Marshal([]any{devs, toks, etoks, audit})
	return string(b)
}

func TestRolesOrdered(t *testing.T) {
	f := newFixture(t)
	// An operator may label but not mint tokens; an admin may do both.
	if code, data := f.do(t, "operator", "PATCH", "/v1/devices/dev-000/labels", api.LabelPatch{Set: map[string]string{"ring": "canary"}}); code != 200 {
		t.Fatalf("operator label: %d %s", code, data)
	}
	if code, _ := f.do(t, "operator", "POST", "/v1/tokens", api.APITokenRequest{Name: "x", Role: "admin"}); code != http.StatusForbidden {
		t.Fatalf("operator minted a token: %d", code)
	}
	code, data := f.do(t, "admin", "POST", "/v1/tokens", api.APITokenRequest{Name: "ci", Role: "viewer"})
	if code != http.StatusCreated {
		t.Fatalf("admin token create: %d %s", code, data)
	}
	var created api.APITokenCreated
	if err := json.Unmarshal(data, &created); err != nil || !strings.HasPrefix(created.Token, api.APITokenPrefix) {
		t.Fatalf("created %+v, %v", created, err)
	}
	f.tokens["new"] = created.Token
	if code, data := f.do(t, "new", "GET", "/v1/whoami", nil); code != 200 || !strings.Contains(string(data), `"viewer"`) {
		t.Fatalf("new token whoami: %d %s", code, data)
	}
	if code, _ := f.do(t, "admin", "DELETE", "/v1/tokens/"+created.ID, nil); code != http.StatusNoContent {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := f.do(t, "new", "GET", "/v1/whoami", nil); code != http.StatusUnauthorized {
		t.Fatalf("revoked token still works: %d", code)
	}
	// The audit log names who did what.
	code, data = f.do(t, "operator", "GET", "/v1/audit", nil)
	if code != 200 || !strings.Contains(string(data), "device.label") || !strings.Contains(string(data), "api-token.revoke") {
		t.Fatalf("audit: %d %s", code, data)
	}
}

func TestHostileRequests(t *testing.T) {
	f := newFixture(t)
	before := snapshot(t, f.store)
	cases := []struct {
		name, method, path string
		body               string
		want               int
	}{
		{"unknown field", "PATCH", "/v1/devices/dev-000/labels", `{"set":{"a":"b"},"evil":1}`, 400},
		{"wrong type", "PATCH", "/v1/devices/dev-000/labels", `{"set":["a"]}`, 400},
		{"truncated", "PATCH", "/v1/devices/dev-000/labels", `{"set":{"a":`, 400},
		{"trailing data", "PATCH", "/v1/devices/dev-000/labels", `{"set":{"a":"b"}} {}`, 400},
		{"oversize", "PATCH", "/v1/devices/dev-000/labels", `{"set":{"a":"` + strings.Repeat("x", 2<<20) + `"}}`, 400},
		{"invalid label", "PATCH", "/v1/devices/dev-000/labels", `{"set":{"bad key!":"v"}}`, 400},
		{"empty patch", "PATCH", "/v1/devices/dev-000/labels", `{}`, 400},
		{"unknown device", "PATCH", "/v1/devices/nope/labels", `{"set":{"a":"b"}}`, 404},
		{"path traversal", "GET", "/v1/devices/..%2F..%2Fetc%2Fpasswd", ``, 404},
		{"bad role", "POST", "/v1/tokens", `{"name":"x","role":"root"}`, 400},
		{"bad ttl", "POST", "/v1/enrol-tokens", `{"name":"x","ttl":"-1h"}`, 400},
		{"newline name", "POST", "/v1/enrol-tokens", `{"name":"a\nb"}`, 400},
		{"bad selector", "GET", "/v1/devices?selector=novalue", ``, 400},
		{"bad limit", "GET", "/v1/devices?limit=0", ``, 400},
		{"enrol garbage", "POST", "/v1/enrol", `{"token":`, 400},
		{"enrol unknown field", "POST", "/v1/enrol", `{"token":"t","evil":true}`, 400},
		{"enrol bad proof", "POST", "/v1/enrol", `{"token":"t","deviceId":"d1","publicKey":"` + strings.Repeat("A", 43) + `=","signature":""}`, 400},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, f.srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+f.tokens["admin"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, resp.StatusCode, data, c.want)
		}
		var e api.ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			t.Errorf("%s: error body %q is not {\"error\": …}", c.name, data)
		}
	}
	// Admin actions above that failed must not have been audited or applied.
	if after := snapshot(t, f.store); after != before {
		t.Fatalf("a refused request changed the store")
	}
}

func TestListDevicesSelectorAndPages(t *testing.T) {
	f := newFixture(t)
	code, data := f.do(t, "viewer", "GET", "/v1/devices?selector=site=a&limit=1", nil)
	var page api.DeviceList
	if code != 200 || json.Unmarshal(data, &page) != nil || len(page.Devices) != 1 || page.Next != "dev-000" {
		t.Fatalf("page 1: %d %s", code, data)
	}
	code, data = f.do(t, "viewer", "GET", "/v1/devices?selector=site=a&limit=1&after="+page.Next, nil)
	if code != 200 || json.Unmarshal(data, &page) != nil || len(page.Devices) != 1 || page.Devices[0].ID != "dev-002" {
		t.Fatalf("page 2: %d %s", code, data)
	}
}

func TestOpenAPIDocument(t *testing.T) {
	f := newFixture(t)
	code, data := f.do(t, "", "GET", "/v1/openapi.json", nil)
	if code != 200 {
		t.Fatalf("%d", code)
	}
	var doc struct {
		OpenAPI string                               `json:"openapi"`
		Paths   map[string]map[string]map[string]any `json:"paths"`
		Comps   struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil || doc.OpenAPI != "3.0.3" {
		t.Fatalf("not an OpenAPI 3 document: %v", err)
	}
	for _, want := range []string{"DeviceView", "LabelPatch", "APITokenCreated", "ErrorBody", "EnrolRequestDoc"} {
		if doc.Comps.Schemas[want] == nil {
			t.Errorf("schema %s missing", want)
		}
	}
	// Every route the mux serves is documented: an undocumented path 404s
	// with our error body, a documented one does not.
	for p, ops := range doc.Paths {
		for m := range ops {
			path := strings.NewReplacer("{id}", "dev-001").Replace(p)
			if code, body := f.do(t, "admin", strings.ToUpper(m), path, nil); code == 404 && strings.Contains(string(body), "no such route") {
				t.Errorf("%s %s documented but not served", m, p)
			}
		}
	}
	if code, _ := f.do(t, "admin", "GET", "/v1/undocumented", nil); code != 404 {
		t.Errorf("unknown route: %d", code)
	}
}

func TestTokenHashIsSHA256(t *testing.T) {
	secret, hash := api.NewSecret(api.EnrolTokenPrefix)
	sum := sha256.Sum256([]byte(secret))
	if !bytes.Equal(sum[:], hash) || !strings.HasPrefix(secret, api.EnrolTokenPrefix) || len(secret) < 40 {
		t.Fatalf("secret %q hash %x", secret, hash)
	}
}
