package api_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// TestUsersRoutes: only an admin manages console users; bad requests are
// refused with 400 and change nothing; the answer never carries the
// password or its hash; every change is audited.
func TestUsersRoutes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, role := range []string{"viewer", "operator"} {
		if code, _ := f.do(t, role, "GET", "/v1/users", nil); code != http.StatusForbidden {
			t.Errorf("%s lists users: %d", role, code)
		}
		if code, _ := f.do(t, role, "POST", "/v1/users", api.UserRequest{Name: "x", Role: "admin", Password: "long enough"}); code != http.StatusForbidden {
			t.Errorf("%s creates a user: %d", role, code)
		}
	}
	for _, bad := range []any{
		api.UserRequest{Name: "x", Role: "admin", Password: "short"},
		api.UserRequest{Name: "x", Role: "root", Password: "long enough"},
		api.UserRequest{Name: "", Role: "admin", Password: "long enough"},
		api.UserRequest{Name: "a b", Role: "admin", Password: "long enough"},
		api.UserRequest{Name: strings.Repeat("n", 65), Role: "admin", Password: "long enough"},
		api.UserRequest{Name: "x", Role: "admin", Password: strings.Repeat("p", 1025)},
		map[string]any{"name": "x", "role": "admin", "password": "long enough", "password_hash": "$x"},
	} {
		if code, data := f.do(t, "admin", "POST", "/v1/users", bad); code != http.StatusBadRequest {
			t.Errorf("create %+v: %d %s, want 400", bad, code, data)
		}
	}
	if us, _ := f.store.ListUsers(ctx); len(us) != 0 {
		t.Fatalf("refused requests created users: %+v", us)
	}
	code, data := f.do(t, "admin", "POST", "/v1/users", api.UserRequest{Name: "olivia", Role: "operator", Password: "a long password"})
	if code != http.StatusCreated || strings.Contains(string(data), "argon2") || strings.Contains(string(data), "a long password") {
		t.Fatalf("create: %d %s", code, data)
	}
	if code, _ := f.do(t, "admin", "POST", "/v1/users", api.UserRequest{Name: "olivia", Role: "viewer", Password: "another password"}); code != http.StatusConflict {
		t.Errorf("second create: %d, want 409", code)
	}
	if code, data := f.do(t, "admin", "PATCH", "/v1/users/olivia", api.UserPatch{Role: "admin"}); code != 200 || !strings.Contains(string(data), `"admin"`) {
		t.Errorf("patch: %d %s", code, data)
	}
	if code, _ := f.do(t, "admin", "PATCH", "/v1/users/nobody", api.UserPatch{Role: "admin"}); code != http.StatusNotFound {
		t.Errorf("patch unknown: %d", code)
	}
	if code, _ := f.do(t, "admin", "DELETE", "/v1/users/olivia", nil); code != http.StatusNoContent {
		t.Errorf("disable: %d", code)
	}
	u, err := f.store.User(ctx, "olivia")
	if err != nil || u.Role != "admin" || u.DisabledAt == 0 || !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
		t.Errorf("stored user %+v %v", u, err)
	}
	es, _ := f.store.ListAudit(ctx, 10, 0)
	var got []string
	for _, e := range es {
		got = append(got, e.Actor+" "+e.Action+" "+e.Target)
	}
	want := "token:admin(admin) user.disable user/olivia|token:admin(admin) user.update user/olivia|token:admin(admin) user.create user/olivia"
	if strings.Join(got, "|") != want {
		t.Errorf("audit %q, want %q", strings.Join(got, "|"), want)
	}
}

// TestTrustedCaller: a caller put in the context in-process (the console)
// is held to the routes' roles like a token, and named in the audit log
// as the user; a request from the network cannot claim one.
func TestTrustedCaller(t *testing.T) {
	f := newFixture(t)
	req, _ := http.NewRequest("GET", "/v1/whoami", nil)
	rec := httptest.NewRecorder()
	f.api.ServeHTTP(rec, req.WithContext(api.WithCaller(req.Context(), api.Caller{User: "vera", Role: api.Viewer})))
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"user": "vera"`) {
		t.Fatalf("whoami as vera: %d %s", rec.Code, rec.Body.String())
	}
	req, _ = http.NewRequest("PATCH", "/v1/devices/dev-000/labels", strings.NewReader(`{"set":{"a":"b"}}`))
	rec = httptest.NewRecorder()
	f.api.ServeHTTP(rec, req.WithContext(api.WithCaller(req.Context(), api.Caller{User: "vera", Role: api.Viewer})))
	if rec.Code != http.StatusForbidden {
		t.Errorf("viewer vera labels: %d, want 403", rec.Code)
	}
	req, _ = http.NewRequest("PATCH", "/v1/devices/dev-000/labels", strings.NewReader(`{"set":{"a":"b"}}`))
	rec = httptest.NewRecorder()
	f.api.ServeHTTP(rec, req.WithContext(api.WithCaller(req.Context(), api.Caller{User: "otto", Role: api.Operator})))
	if rec.Code != 200 {
		t.Fatalf("operator otto labels: %d %s", rec.Code, rec.Body.String())
	}
	es, _ := f.store.ListAudit(context.Background(), 1, 0)
	if len(es) != 1 || es[0].Actor != "user:otto" {
		t.Errorf("audit %+v, want the label change by user:otto", es)
	}
	// Over the network, no header or cookie makes a caller.
	if code, _ := f.do(t, "", "GET", "/v1/whoami", nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous whoami: %d", code)
	}
}
