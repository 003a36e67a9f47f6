// Package api is the control plane's REST API: device enrolment, the device
// registry, API and bootstrap tokens, and the audit log, over HTTPS.
//
// Every route is declared once in the routes table (routes.go) with the
// role it needs; the same table builds the mux, the authorisation
// middleware and the OpenAPI document served at /v1/openapi.json, so the
// three cannot drift apart. Roles are ordered: viewer < operator < admin.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Store is what the API reads and writes directly.
type Store interface {
	ListDevices(ctx context.Context, opts store.ListOptions) ([]store.Device, error)
	Device(ctx context.Context, id string) (store.Device, error)
	CreateEnrolToken(ctx context.Context, t store.EnrolToken) error
	ListEnrolTokens(ctx context.Context) ([]store.EnrolToken, error)
	RevokeEnrolToken(ctx context.Context, id string, at int64) error
	CreateAPIToken(ctx context.Context, t store.APIToken) error
	APITokenByHash(ctx context.Context, hash []byte) (store.APIToken, error)
	ListAPITokens(ctx context.Context) ([]store.APIToken, error)
	RevokeAPIToken(ctx context.Context, id string, at int64) error
	TouchAPIToken(ctx context.Context, id string, at int64) error
	ListAudit(ctx context.Context, limit int, before int64) ([]store.AuditEntry, error)
	AppendAudit(ctx context.Context, e store.AuditEntry) (int64, error)
	CreateUser(ctx context.Context, u store.ConsoleUser) error
	User(ctx context.Context, name string) (store.ConsoleUser, error)
	ListUsers(ctx context.Context) ([]store.ConsoleUser, error)
	UpdateUser(ctx context.Context, name, role, passwordHash string) error
	DisableUser(ctx context.Context, name string, at int64) error
}

// Registry is what the API asks of the device registry.
type Registry interface {
	Enrol(ctx context.Context, req *pb.EnrolRequest) (*pb.EnrolResponse, error)
	SetLabels(ctx context.Context, actor, id string, set map[string]string, remove []string) (store.Device, error)
	Decommission(ctx context.Context, actor, id string) (store.Device, error)
	CommandWith(ctx context.Context, actor, id, kind string, opt registry.CommandOptions) (registry.CommandReply, error)
}

// Config holds what the API is built from.
type Config struct {
	Store    Store
	Registry Registry
	Logger   *slog.Logger
	Now      func() time.Time
	Bundles  Bundles // release, bundles, assignments, progress; nil: those routes answer 503
	// Telemetry answers drift queries and device events; nil: 503.
	Telemetry Telemetry
	// Rollouts runs staged rollouts; nil: 503.
	Rollouts Rollouts
	// Support asks devices for support bundles and serves them; nil: 503.
	Support Support
	Metrics *expvar.Map // exported at /v1/metrics (viewer); nil: none
	// Version is reported by /healthz.
	Version string
}

// API is the REST API's http.Handler.
type API struct {
	cfg Config
	mux *http.ServeMux
	log *slog.Logger

	touchMu sync.Mutex
	touched map[string]time.Time // API token ID → last time LastUsedAt was written
}

// maxBody caps every request body.
const maxBody = 1 << 20

// New returns the API handler.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &API{cfg: cfg, mux: http.NewServeMux(), log: cfg.Logger, touched: map[string]time.Time{}}
	for _, rt := range append(a.routes(), a.supportRoutes()...) {
		a.mux.Handle(rt.Method+" "+rt.Path, limitBody(rt.MaxBody, a.authorize(rt)))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such route: "+r.Method+" "+r.URL.Path)
	})
	return a
}

// limitBody caps a route's request body at limit bytes (0: maxBody).
func limitBody(limit int64, h http.Handler) http.Handler {
	if limit <= 0 {
		limit = maxBody
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		h.ServeHTTP(w, r)
	})
}

// ServeHTTP serves the API; each route caps its own request body
// (limitBody), and unrouted requests never read theirs.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	a.mux.ServeHTTP(w, r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ErrorBody is every error response.
type ErrorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, ErrorBody{Error: msg})
}

// decode reads a JSON body into v, refusing unknown fields, trailing data
// and bodies over maxBody.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("request body over %d bytes", maxBody)
		}
		return fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return errors.New("request body: trailing data after the JSON value")
	}
	return nil
}

// fail maps an error from the registry or store to a status.
func (a *API) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, registry.ErrInvalid), errors.Is(err, store.ErrInvalid):
		status = http.StatusBadRequest
	case errors.Is(err, registry.ErrUnauthorized):
		status = http.StatusUnauthorized
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, store.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, registry.ErrConflict), errors.Is(err, store.ErrConflict):
		status = http.StatusConflict
	case errors.Is(err, registry.ErrGone):
		status = http.StatusGone
	case errors.Is(err, registry.ErrUnavailable):
		status = http.StatusServiceUnavailable
	}
	msg := err.Error()
	if status == http.StatusInternalServerError {
		a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	}
	writeError(w, status, msg)
}
