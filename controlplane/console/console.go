// Package console is the operator console: server-rendered HTML pages of
// the fleet, devices, rollouts, drift and the audit log, served by
// flotilla-server beside the REST API, with its CSS and script embedded in
// the binary (it works with no internet access).
//
// People log in with a name and password (console users, argon2id hashes
// in the store); a session is a random secret in a Secure, HttpOnly,
// SameSite=Strict cookie, of which the store keeps only the SHA-256. Every
// form carries the session's CSRF token, checked on every POST.
//
// The console reads and changes nothing itself: each page calls the REST
// API in-process, as the logged-in user (api.WithCaller). The API's role
// checks and audit entries therefore hold for the console as they do for
// tokens: a viewer's pause button is refused by the API with 403, not only
// hidden, and an operator's pause is audited as user:NAME.
package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/password"
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed static
var staticFiles embed.FS

// Store is what the console keeps itself: users, sessions, and audit
// entries of logins.
type Store interface {
	User(ctx context.Context, name string) (store.ConsoleUser, error)
	CreateSession(ctx context.Context, s store.Session) error
	SessionByHash(ctx context.Context, hash []byte, now int64) (store.Session, store.ConsoleUser, error)
	DeleteSession(ctx context.Context, hash []byte) error
	AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error)
}

// Config holds what the console is built from.
type Config struct {
	Store Store
	// API is the REST API's handler, called in-process as the user.
	API    http.Handler
	Logger *slog.Logger
	Now    func() time.Time
	// SessionTTL is how long a login lasts; default 12h.
	SessionTTL time.Duration
	// LivePoll is how often the rollout page refreshes its live part;
	// default 2s.
	LivePoll time.Duration
}

// Cookie names. The __Host- prefix makes the browser insist on Secure,
// Path=/ and no Domain, so no other host can plant or read them.
const (
	sessionCookie = "__Host-flotilla-session"
	loginCookie   = "__Host-flotilla-login"
)

// Console is the console's http.Handler.
type Console struct {
	cfg   Config
	log   *slog.Logger
	mux   *http.ServeMux
	pages map[string]*template.Template
	// dummyHash is checked against when a login names no user, so that the
	// answer takes as long as for a wrong password.
	dummyHash string
	throttle  *throttle
	diag      diagResults // the latest remote diag answer per device (diag.go)
}

// maxForm caps a form's body (a rollout spec is the largest field).
const maxForm = 256 << 10

// New returns the console.
func New(cfg Config) (*Console, error) {
	if cfg.Store == nil || cfg.API == nil {
		return nil, errors.New("console: Store and API are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.LivePoll <= 0 {
		cfg.LivePoll = 2 * time.Second
	}
	c := &Console{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), pages: map[string]*template.Template{}, throttle: newThrottle()}
	var err error
	if c.dummyHash, err = password.Hash("dummy password for unknown users"); err != nil {
		return nil, err
	}
	for _, p := range []string{"login", "fleet", "devices", "device", "bundles", "rollouts", "rollout", "rollout_live", "drift", "audit", "admin", "error"} {
		t := template.New(p).Funcs(funcs)
		if p == "rollout_live" {
			t, err = t.ParseFS(templateFiles, "templates/rollout_live.html")
		} else {
			t, err = t.ParseFS(templateFiles, "templates/layout.html", "templates/rollout_live.html", "templates/"+p+".html")
		}
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", p, err)
		}
		c.pages[p] = t
	}
	static, _ := fs.Sub(staticFiles, "static")
	c.mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	c.mux.HandleFunc("GET /login", c.loginPage)
	c.mux.HandleFunc("POST /login", c.login)
	c.mux.HandleFunc("POST /logout", c.authed(c.logout))
	c.mux.HandleFunc("GET /{$}", c.authed(c.fleet))
	c.mux.HandleFunc("GET /devices", c.authed(c.devices))
	c.mux.HandleFunc("GET /devices/{id}", c.authed(c.device))
	c.mux.HandleFunc("POST /devices/{id}/diag/{what}", c.authed(c.deviceDiag))
	c.mux.HandleFunc("POST /devices/{id}/support-bundles", c.authed(c.requestSupport))
	c.mux.HandleFunc("GET /devices/{id}/support-bundles/{upload}", c.authed(c.downloadSupport))
	c.mux.HandleFunc("GET /bundles", c.authed(c.bundles))
	c.mux.HandleFunc("GET /rollouts", c.authed(c.rollouts))
	c.mux.HandleFunc("POST /rollouts", c.authed(c.createRollout))
	c.mux.HandleFunc("GET /rollouts/{id}", c.authed(c.rollout))
	c.mux.HandleFunc("GET /rollouts/{id}/live", c.authed(c.rolloutLive))
	c.mux.HandleFunc("POST /rollouts/{id}/{action}", c.authed(c.actRollout))
	c.mux.HandleFunc("GET /drift", c.authed(c.drift))
	c.mux.HandleFunc("GET /audit", c.authed(c.audit))
	c.mux.HandleFunc("GET /admin", c.authed(c.admin))
	c.mux.HandleFunc("POST /admin/{what}", c.authed(c.adminAct))
	return c, nil
}

// ServeHTTP serves the console with headers that keep its pages from
// being framed, sniffed, cached or given scripts from elsewhere.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if !strings.HasPrefix(r.URL.Path, "/static/") {
		h.Set("Cache-Control", "no-store")
	}
	c.mux.ServeHTTP(w, r)
}

// user is the logged-in user of a request.
type user struct {
	Name string
	Role api.Role
	CSRF string
}

// CanOperate says whether the user's role may change things (the page
// hides the buttons otherwise; the API refuses them regardless).
func (u user) CanOperate() bool { return u.Role >= api.Operator }

// IsAdmin says whether the user's role manages users and tokens.
func (u user) IsAdmin() bool { return u.Role >= api.Admin }

type handler func(w http.ResponseWriter, r *http.Request, u user)

// authed resolves the session cookie; without a live session GETs go to
// the login page and POSTs are refused. Every POST must carry the
// session's CSRF token.
func (c *Console) authed(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, ok := c.session(r)
		if !ok {
			if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/live") {
				http.Redirect(w, r, "/login", http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusUnauthorized)
			return
		}
		if r.Method == http.MethodPost {
			r.Body = http.MaxBytesReader(w, r.Body, maxForm)
			if err := r.ParseForm(); err != nil {
				http.Error(w, "bad form: "+err.Error(), http.StatusBadRequest)
				return
			}
			if !sameToken(r.PostForm.Get("csrf"), u.CSRF) {
				http.Error(w, "the form's CSRF token is missing or wrong: reload the page", http.StatusForbidden)
				return
			}
		}
		h(w, r, u)
	}
}

func sameToken(got, want string) bool {
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

func (c *Console) session(r *http.Request) (user, bool) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return user{}, false
	}
	h := sha256.Sum256([]byte(ck.Value))
	sess, u, err := c.cfg.Store.SessionByHash(r.Context(), h[:], c.cfg.Now().UnixMilli())
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.log.Error("session lookup failed", "err", err)
		}
		return user{}, false
	}
	role, err := api.ParseRole(u.Role)
	if err != nil {
		return user{}, false
	}
	return user{Name: u.Name, Role: role, CSRF: sess.CSRF}, true
}

func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("console: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if _, ok := c.session(r); ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	c.showLogin(w, r, http.StatusOK, "")
}

// showLogin renders the login form with a fresh login token, set also as
// a cookie: the POST must bring both (a double-submit token, so another
// site cannot log a browser in under its own account).
func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: tok, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: 600})
	c.render(w, r, status, "login", user{}, map[string]any{"LoginToken": tok, "Error": msg})
}

// errDisabled is a login of a disabled user: refused like a wrong password.
var errDisabled = errors.New("user disabled")

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil || !sameToken(r.PostForm.Get("login_token"), ck.Value) {
		c.showLogin(w, r, http.StatusForbidden, "The login form expired; try again.")
		return
	}
	name, pw := r.PostForm.Get("name"), r.PostForm.Get("password")
	ctx := r.Context()
	now := c.cfg.Now()
	addr := clientAddr(r)
	if !c.throttle.allowed(addr, name, now) {
		c.showLogin(w, r, http.StatusTooManyRequests, "Too many failed logins; try again in a quarter of an hour.")
		return
	}
	u, err := c.cfg.Store.User(ctx, name)
	switch {
	case err == nil && u.DisabledAt == 0:
		err = password.Check(u.PasswordHash, pw)
	case err == nil:
		_ = password.Check(c.dummyHash, pw)
		err = errDisabled
	case errors.Is(err, store.ErrNotFound):
		_ = password.Check(c.dummyHash, pw)
	}
	if err != nil {
		if !errors.Is(err, password.ErrMismatch) && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, errDisabled) {
			c.log.Error("login failed", "user", name, "err", err)
		}
		c.throttle.failed(addr, name, now)
		c.auditLogin(ctx, now, "console.login_failed", name)
		c.showLogin(w, r, http.StatusUnauthorized, "Wrong name or password.")
		return
	}
	secret := randomToken()
	h := sha256.Sum256([]byte(secret))
	sess := store.Session{SecretHash: h[:], User: u.Name, CSRF: randomToken(), CreatedAt: now.UnixMilli(),
		ExpiresAt: now.Add(c.cfg.SessionTTL).UnixMilli()}
	if err := c.cfg.Store.CreateSession(ctx, sess); err != nil {
		c.log.Error("session not created", "user", u.Name, "err", err)
		c.showLogin(w, r, http.StatusInternalServerError, "The session could not be created.")
		return
	}
	c.auditLogin(ctx, now, "console.login", u.Name)
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.SessionTTL / time.Second)})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (c *Console) auditLogin(ctx context.Context, now time.Time, action, name string) {
	if len(name) > 64 {
		name = name[:64]
	}
	if _, err := c.cfg.Store.AppendAudit(ctx, store.AuditEntry{At: now.UnixMilli(), Actor: "user:" + name,
		Action: action, Target: "user/" + name}); err != nil {
		c.log.Error("audit entry not written", "action", action, "err", err)
	}
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, u user) {
	if ck, err := r.Cookie(sessionCookie); err == nil {
		h := sha256.Sum256([]byte(ck.Value))
		if err := c.cfg.Store.DeleteSession(r.Context(), h[:]); err != nil {
			c.log.Error("session not deleted", "err", err)
		}
	}
	c.auditLogin(r.Context(), c.cfg.Now(), "console.logout", u.Name)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true, MaxAge: -1})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

// client returns an API client that calls the API in-process as u.
func (c *Console) client(u user) *apiclient.Client {
	return apiclient.New("http://console.internal", "", &http.Client{Transport: inProcess{h: c.cfg.API, caller: api.Caller{User: u.Name, Role: u.Role}}})
}

// inProcess is an http.RoundTripper that serves a request with the API
// handler directly, as caller.
type inProcess struct {
	h      http.Handler
	caller api.Caller
}

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(api.WithCaller(req.Context(), t.caller))
	req.Header.Del("Authorization")
	if req.Body == nil {
		req.Body = http.NoBody
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	t.h.ServeHTTP(rec, req)
	return &http.Response{StatusCode: rec.status, Status: http.StatusText(rec.status), Header: rec.header,
		Body: io.NopCloser(&rec.body), ContentLength: int64(rec.body.Len()), Request: req,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
}

// recorder is the http.ResponseWriter of an in-process call.
type recorder struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(b)
}

// render executes a page into a buffer first, so a template error is a
// clean 500 rather than half a page.
func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, page string, u user, data map[string]any) {
	if data == nil {
		data = map[string]any{}
	}
	data["User"] = u
	data["Page"] = page
	data["LivePollMs"] = c.cfg.LivePoll.Milliseconds()
	var buf bytes.Buffer
	name := "layout"
	if page == "rollout_live" {
		name = "live"
	}
	if err := c.pages[page].ExecuteTemplate(&buf, name, data); err != nil {
		c.log.Error("page not rendered", "page", page, "path", r.URL.Path, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// apiError renders an error the API gave, with its status: a viewer who
// posts a change sees the API's 403.
func (c *Console) apiError(w http.ResponseWriter, r *http.Request, u user, err error) {
	status := apiclient.StatusOf(err)
	if status == 0 {
		c.log.Error("console call failed", "path", r.URL.Path, "err", err)
		status = http.StatusInternalServerError
	}
	msg := err.Error()
	var ae *apiclient.Error
	if errors.As(err, &ae) {
		msg = ae.Message
	}
	c.render(w, r, status, "error", u, map[string]any{"Status": status, "Error": msg})
}
