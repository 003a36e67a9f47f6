package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/console"
	"github.com/flotilla-edge/flotilla/controlplane/password"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

type fixture struct {
	srv   *httptest.Server
	store *store.Store
	now   atomic.Int64 // unix ms, the console's and API's clock
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{store: st}
	f.now.Store(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC).UnixMilli())
	now := func() time.Time { return time.UnixMilli(f.now.Load()) }
	a := api.New(api.Config{Store: st, Registry: registry.New(registry.Config{Store: st}), Now: now, Version: "test"})
	con, err := console.New(console.Config{Store: st, API: a, Now: now, SessionTTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", a)
	mux.Handle("/", con)
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	for _, u := range []struct{ name, role string }{{"vera", "viewer"}, {"otto", "operator"}, {"ada", "admin"}} {
		h, err := password.Hash(u.name + "-password")
		if err != nil {
			t.Fatal(err)
		}
		if err := st.CreateUser(ctx, store.ConsoleUser{Name: u.name, Role: u.role, PasswordHash: h, CreatedAt: f.now.Load()}); err != nil {
			t.Fatal(err)
		}
	}
	storetest.Enrol(t, st, 3, func(i int) map[string]string { return map[string]string{"site": []string{"a", "b", "a"}[i]} })
	return f
}

// browser is a client with a cookie jar that does not follow redirects.
type browser struct {
	t  *testing.T
	f  *fixture
	hc *http.Client
}

func (f *fixture) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	hc := *f.srv.Client() // a copy: each browser has its own jar
	hc.Jar = jar
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browser{t: t, f: f, hc: &hc}
}

func (b *browser) get(path string) (int, string, http.Header) {
	b.t.Helper()
	resp, err := b.hc.Get(b.f.srv.URL + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

func (b *browser) post(path string, form url.Values) (int, string, http.Header) {
	b.t.Helper()
	resp, err := b.hc.PostForm(b.f.srv.URL+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data), resp.Header
}

var (
	loginTokenRE = regexp.MustCompile(`name="login_token" value="([^"]+)"`)
	csrfRE       = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

func find(t *testing.T, re *regexp.Regexp, page string) string {
	t.Helper()
	m := re.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no %s in page:\n%s", re, page)
	}
	return m[1]
}

// login logs in and returns the session's CSRF token.
func (b *browser) login(name, pw string) (int, string) {
	b.t.Helper()
	_, page, _ := b.get("/login")
	code, _, _ := b.post("/login", url.Values{"login_token": {find(b.t, loginTokenRE, page)}, "name": {name}, "password": {pw}})
	if code != http.StatusSeeOther {
		return code, ""
	}
	_, page, _ = b.get("/")
	return code, find(b.t, csrfRE, page)
}

func auditActions(t *testing.T, s *store.Store) []string {
	es, err := s.ListAudit(context.Background(), 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Actor+" "+e.Action)
	}
	return out
}

// TestLogin: pages need a session; a login needs the form's token, the
// right password and an enabled user; the session cookie is Secure,
// HttpOnly and SameSite=Strict and holds no more than a random secret;
// logins and failures are audited.
func TestLogin(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	if code, _, h := b.get("/"); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Fatalf("fleet without a session: %d to %q, want a redirect to /login", code, h.Get("Location"))
	}
	// No login token (as a cross-site form would post): refused.
	if code, _, _ := b.post("/login", url.Values{"name": {"otto"}, "password": {"otto-password"}}); code != http.StatusForbidden {
		t.Errorf("login without the form token: %d, want 403", code)
	}
	if code, _ := b.login("otto", "wrong-password"); code != http.StatusUnauthorized {
		t.Errorf("wrong password: %d, want 401", code)
	}
	if code, _ := b.login("nobody", "whatever-password"); code != http.StatusUnauthorized {
		t.Errorf("unknown user: %d, want 401", code)
	}
	_, page, _ := b.get("/login")
	resp, err := b.hc.PostForm(f.srv.URL+"/login", url.Values{"login_token": {find(t, loginTokenRE, page)}, "name": {"otto"}, "password": {"otto-password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var sess *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-flotilla-session" && c.Value != "" {
			sess = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || sess == nil {
		t.Fatalf("login: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	if !sess.Secure || !sess.HttpOnly || sess.SameSite != http.SameSiteStrictMode || sess.Path != "/" || len(sess.Value) < 40 {
		t.Errorf("session cookie %+v: want Secure, HttpOnly, SameSite=Strict, Path=/, a long random value", sess)
	}
	code, page, h := b.get("/")
	if code != 200 || !strings.Contains(page, `id="devices-total">3<`) || !strings.Contains(page, "otto (operator)") {
		t.Fatalf("fleet after login: %d\n%s", code, page)
	}
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	got := strings.Join(auditActions(t, f.store), "\n")
	for _, want := range []string{"user:otto console.login_failed", "user:nobody console.login_failed", "user:otto console.login"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit log lacks %q:\n%s", want, got)
		}
	}
	// The session ends when it expires, and when the user is disabled.
	f.now.Add(int64(2 * time.Hour / time.Millisecond))
	if code, _, _ := b.get("/devices"); code != http.StatusSeeOther {
		t.Errorf("expired session: %d, want a redirect to the login", code)
	}
	b2 := f.browser(t)
	if code, _ := b2.login("vera", "vera-password"); code != http.StatusSeeOther {
		t.Fatalf("vera login: %d", code)
	}
	if err := f.store.DisableUser(context.Background(), "vera", f.now.Load()); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := b2.get("/devices"); code != http.StatusSeeOther {
		t.Errorf("disabled user's session: %d, want a redirect to the login", code)
	}
	if code, _ := b2.login("vera", "vera-password"); code != http.StatusUnauthorized {
		t.Errorf("disabled user logged in: %d", code)
	}
}

// TestCSRF: a POST without the session's CSRF token, or with another
// session's, is refused and changes nothing; with it, it goes through.
func TestCSRF(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	_, csrf := b.login("otto", "otto-password")
	other := f.browser(t)
	_, otherCSRF := other.login("ada", "ada-password")
	before := len(auditActions(t, f.store))
	for _, tok := range []string{"", otherCSRF, csrf + "x"} {
		if code, _, _ := b.post("/logout", url.Values{"csrf": {tok}}); code != http.StatusForbidden {
			t.Errorf("logout with csrf %q: %d, want 403", tok, code)
		}
		if code, _, _ := b.post("/rollouts/r1/pause", url.Values{"csrf": {tok}}); code != http.StatusForbidden {
			t.Errorf("pause with csrf %q: %d, want 403", tok, code)
		}
	}
	if n := len(auditActions(t, f.store)); n != before {
		t.Errorf("refused posts wrote %d audit entries", n-before)
	}
	if code, _, _ := b.get("/devices"); code != 200 {
		t.Fatalf("session ended by a refused logout: %d", code)
	}
	if code, _, h := b.post("/logout", url.Values{"csrf": {csrf}}); code != http.StatusSeeOther || h.Get("Location") != "/login" {
		t.Fatalf("logout: %d %q", code, h.Get("Location"))
	}
	if code, _, _ := b.get("/devices"); code != http.StatusSeeOther {
		t.Errorf("session alive after logout: %d", code)
	}
}

// TestViewerRefusedByAPI: a viewer's console posts reach the API, which
// refuses them with 403 (the page is not the guard); an operator's same
// post passes the role check and reaches the rollout service (absent
// here: 503). A viewer is shown no action buttons either.
func TestViewerRefusedByAPI(t *testing.T) {
	f := newFixture(t)
	v := f.browser(t)
	_, csrf := v.login("vera", "vera-password")
	before := strings.Join(auditActions(t, f.store), "\n")
	for _, p := range []string{"/rollouts/r1/pause", "/rollouts/r1/abort", "/rollouts"} {
		code, page, _ := v.post(p, url.Values{"csrf": {csrf}, "spec": {"bundle: {model: m, release: 1}"}})
		if code != http.StatusForbidden || !strings.Contains(page, "needs the operator role; user vera has viewer") {
			t.Errorf("viewer POST %s: %d\n%s", p, code, page)
		}
	}
	if after := strings.Join(auditActions(t, f.store), "\n"); after != before {
		t.Errorf("a viewer's refused posts changed the audit log:\n%s", after)
	}
	if code, page, _ := v.get("/rollouts"); code != http.StatusServiceUnavailable && strings.Contains(page, `id="create-rollout"`) {
		t.Errorf("a viewer is offered the rollout form")
	}
	// The audit log needs the operator role at the API.
	if code, _, _ := v.get("/audit"); code != http.StatusForbidden {
		t.Errorf("viewer audit page: %d, want the API's 403", code)
	}
	o := f.browser(t)
	_, ocsrf := o.login("otto", "otto-password")
	if code, page, _ := o.post("/rollouts/r1/pause", url.Values{"csrf": {ocsrf}}); code != http.StatusServiceUnavailable {
		t.Errorf("operator pause without a rollout service: %d, want 503 from the API\n%s", code, page)
	}
	code, page, _ := o.get("/audit")
	if code != 200 || !strings.Contains(page, "console.login") {
		t.Errorf("operator audit page: %d\n%s", code, page)
	}
}

// TestDevicePages: the device list filters by labels and links to each
// device's page.
func TestDevicePages(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	b.login("vera", "vera-password")
	code, page, _ := b.get("/devices?selector=site%3Da")
	if code != 200 || !strings.Contains(page, "2 devices.") || !strings.Contains(page, `href="/devices/dev-000"`) || strings.Contains(page, `href="/devices/dev-001"`) {
		t.Fatalf("devices site=a: %d\n%s", code, page)
	}
	code, page, _ = b.get("/devices/dev-001")
	if code != 200 || !strings.Contains(page, "Device dev-001") || !strings.Contains(page, "site=b") {
		t.Fatalf("device page: %d\n%s", code, page)
	}
	if code, _, _ := b.get("/devices/no-such"); code != http.StatusNotFound {
		t.Errorf("unknown device: %d, want 404", code)
	}
	// Markup in a label is shown as text.
	if _, err := f.store.SetLabels(context.Background(), "dev-002", map[string]string{"note": `<script>alert(1)</script>`}, nil, f.now.Load()); err != nil {
		t.Fatal(err)
	}
	_, page, _ = b.get("/devices")
	if strings.Contains(page, "<script>alert") || !strings.Contains(page, "&lt;script&gt;") {
		t.Error("a label's markup was not escaped")
	}
}

// TestLoginThrottle: after five wrong passwords for a name from one
// address, even the right one is refused (429) without being checked,
// until the failures are a quarter of an hour old; other names from the
// address are not locked until the address's own limit.
func TestLoginThrottle(t *testing.T) {
	f := newFixture(t)
	b := f.browser(t)
	for i := range 5 {
		if code, _ := b.login("otto", "wrong password"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	if code, _ := b.login("otto", "otto-password"); code != http.StatusTooManyRequests {
		t.Fatalf("right password after 5 failures: %d, want 429", code)
	}
	if code, _ := f.browser(t).login("vera", "vera-password"); code != http.StatusSeeOther {
		t.Fatalf("another user from the address: %d, want a login", code)
	}
	f.now.Add(int64(14 * time.Minute / time.Millisecond))
	if code, _ := b.login("otto", "otto-password"); code != http.StatusTooManyRequests {
		t.Fatalf("14 minutes on: %d, want 429", code)
	}
	f.now.Add(int64(time.Minute / time.Millisecond))
	if code, _ := b.login("otto", "otto-password"); code != http.StatusSeeOther {
		t.Fatalf("15 minutes on: %d, want a login", code)
	}
	// The address's limit covers every name.
	c := f.browser(t)
	for i := range 20 {
		if code, _ := c.login("user"+strconv.Itoa(i%4), "wrong password"); code != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i+1, code)
		}
	}
	if code, _ := c.login("ada", "ada-password"); code != http.StatusTooManyRequests {
		t.Fatalf("after 20 failures from the address: %d, want 429", code)
	}
}

// TestAdminPage: an admin adds a user, changes its role, mints a token
// whose secret is shown once, and revokes it, each audited as the admin;
// an operator gets the API's 403 for the page and for each form.
func TestAdminPage(t *testing.T) {
	f := newFixture(t)
	o := f.browser(t)
	_, ocsrf := o.login("otto", "otto-password")
	if code, _, _ := o.get("/admin"); code != http.StatusForbidden {
		t.Errorf("operator admin page: %d, want 403", code)
	}
	if code, _, _ := o.post("/admin/user-create", url.Values{"csrf": {ocsrf}, "name": {"mallory"}, "role": {"admin"}, "password": {"mallory password"}}); code != http.StatusForbidden {
		t.Errorf("operator creates a user: %d, want 403", code)
	}
	if _, err := f.store.User(context.Background(), "mallory"); err == nil {
		t.Fatal("an operator created a user")
	}
	a := f.browser(t)
	_, csrf := a.login("ada", "ada-password")
	if code, _, _ := a.post("/admin/user-create", url.Values{"csrf": {csrf}, "name": {"nina"}, "role": {"viewer"}, "password": {"nina's password"}}); code != http.StatusSeeOther {
		t.Fatalf("create user: %d", code)
	}
	if code, _, _ := a.post("/admin/user-role", url.Values{"csrf": {csrf}, "name": {"nina"}, "role": {"operator"}}); code != http.StatusSeeOther {
		t.Fatalf("set role: %d", code)
	}
	code, page, _ := a.post("/admin/token-create", url.Values{"csrf": {csrf}, "name": {"grafana"}, "role": {"viewer"}})
	secret := regexp.MustCompile(`id="new-token-secret">(flt_api_[A-Za-z0-9_-]+)<`).FindStringSubmatch(page)
	if code != 200 || secret == nil {
		t.Fatalf("create token: %d\n%s", code, page)
	}
	_, page, _ = a.get("/admin")
	if strings.Contains(page, secret[1]) {
		t.Error("the token's secret is shown again")
	}
	toks, _ := f.store.ListAPITokens(context.Background())
	if len(toks) != 1 || toks[0].Name != "grafana" {
		t.Fatalf("tokens %+v", toks)
	}
	if code, _, _ := a.post("/admin/token-revoke", url.Values{"csrf": {csrf}, "id": {toks[0].ID}}); code != http.StatusSeeOther {
		t.Fatalf("revoke: %d", code)
	}
	if u, _ := f.store.User(context.Background(), "nina"); u.Role != "operator" {
		t.Errorf("nina is %q", u.Role)
	}
	got := strings.Join(auditActions(t, f.store), "\n")
	for _, want := range []string{"user:ada user.create", "user:ada user.update", "user:ada api-token.create", "user:ada api-token.revoke"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "user:otto user.") {
		t.Error("the operator's refused forms are in the audit log")
	}
}
