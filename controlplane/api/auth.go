package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// Role is what an API token may do. Each role includes the ones below it.
type Role int

// The roles, weakest first. Public routes need no token at all.
const (
	Public Role = iota
	Viewer
	Operator
	Admin
)

func (r Role) String() string {
	switch r {
	case Public:
		return "public"
	case Viewer:
		return "viewer"
	case Operator:
		return "operator"
	case Admin:
		return "admin"
	}
	return "unknown"
}

// ParseRole parses a role name stored with a token.
func ParseRole(s string) (Role, error) {
	switch s {
	case "viewer":
		return Viewer, nil
	case "operator":
		return Operator, nil
	case "admin":
		return Admin, nil
	}
	return Public, errors.New(`role must be "viewer", "operator" or "admin"`)
}

// Token prefixes tell the kinds apart at a glance (and to secret scanners).
const (
	APITokenPrefix   = "flt_api_"
	EnrolTokenPrefix = "flt_enrol_"
)

// NewSecret returns a token secret with prefix and its SHA-256.
func NewSecret(prefix string) (secret string, hash []byte) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("api: crypto/rand failed: " + err.Error())
	}
	secret = prefix + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(secret))
	return secret, h[:]
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type callerKey struct{}

// Caller is who made a request: an API token, or a console user whose
// session the console checked (User set, TokenID empty).
type Caller struct {
	TokenID string
	Name    string
	User    string
	Role    Role
}

// Actor names the caller in the audit log.
func (c Caller) Actor() string {
	switch {
	case c.User != "":
		return "user:" + c.User
	case c.TokenID == "":
		return "anonymous"
	}
	return "token:" + c.Name + "(" + c.TokenID + ")"
}

type trustedKey struct{}

// WithCaller returns ctx carrying a caller that authorize takes as given
// instead of a bearer token: the console, in the same process, calls the
// API as the user it logged in, so each route's role check and audit
// entry hold for the console too. A context is never built from the
// network, so no request can claim a caller this way.
func WithCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, trustedKey{}, c)
}

func callerFrom(ctx context.Context) Caller {
	c, _ := ctx.Value(callerKey{}).(Caller)
	return c
}

// touchEvery limits how often a token's LastUsedAt is written.
const touchEvery = time.Minute

// authorize wraps a route's handler: it resolves the bearer token and
// refuses callers below the route's role (401 without a valid token, 403
// with one that is too weak).
func (a *API) authorize(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rt.Role == Public {
			rt.Handler(w, r)
			return
		}
		if c, ok := r.Context().Value(trustedKey{}).(Caller); ok && c.User != "" {
			if c.Role < rt.Role {
				writeError(w, http.StatusForbidden, "this needs the "+rt.Role.String()+" role; user "+c.User+" has "+c.Role.String())
				return
			}
			rt.Handler(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
			return
		}
		secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || secret == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="flotilla"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		h := sha256.Sum256([]byte(secret))
		tok, err := a.cfg.Store.APITokenByHash(r.Context(), h[:])
		now := a.cfg.Now()
		if err != nil || !tok.Active(now.UnixMilli()) {
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				a.fail(w, r, err)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="flotilla", error="invalid_token"`)
			writeError(w, http.StatusUnauthorized, "invalid, expired or revoked token")
			return
		}
		role, err := ParseRole(tok.Role)
		if err != nil {
			writeError(w, http.StatusForbidden, "token has an unknown role")
			return
		}
		if role < rt.Role {
			writeError(w, http.StatusForbidden, "this needs the "+rt.Role.String()+" role; the token has "+role.String())
			return
		}
		a.touch(r.Context(), tok.ID, now)
		ctx := context.WithValue(r.Context(), callerKey{}, Caller{TokenID: tok.ID, Name: tok.Name, Role: role})
		rt.Handler(w, r.WithContext(ctx))
	})
}

func (a *API) touch(ctx context.Context, id string, now time.Time) {
	a.touchMu.Lock()
	last := a.touched[id]
	due := now.Sub(last) >= touchEvery
	if due {
		a.touched[id] = now
	}
	a.touchMu.Unlock()
	if due {
		if err := a.cfg.Store.TouchAPIToken(ctx, id, now.UnixMilli()); err != nil {
			a.log.Warn("token last-used time not written", "token", id, "err", err)
		}
	}
}
