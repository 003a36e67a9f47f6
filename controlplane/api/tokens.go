package api

import (
	"net/http"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

const maxTokenName = 128

func validTokenName(s string) bool {
	return s != "" && len(s) <= maxTokenName && !strings.ContainsAny(s, "\x00\r\n")
}

func (a *API) auditAs(r *http.Request, action, target, detail string) {
	_, err := a.cfg.Store.AppendAudit(r.Context(), store.AuditEntry{
		At: a.cfg.Now().UnixMilli(), Actor: callerFrom(r.Context()).Actor(), Action: action, Target: target, Detail: detail})
	if err != nil {
		a.log.Error("audit entry not written", "action", action, "err", err)
	}
}

func (a *API) listEnrolTokens(w http.ResponseWriter, r *http.Request) {
	toks, err := a.cfg.Store.ListEnrolTokens(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]EnrolTokenView, 0, len(toks))
	for _, t := range toks {
		out = append(out, enrolTokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) createEnrolToken(w http.ResponseWriter, r *http.Request) {
	var req EnrolTokenRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !validTokenName(req.Name) {
		writeError(w, http.StatusBadRequest, "name is required, at most 128 bytes, one line")
		return
	}
	if req.MaxUses < 0 {
		writeError(w, http.StatusBadRequest, "max_uses must not be negative")
		return
	}
	ttl := 24 * time.Hour
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 || d > 5*365*24*time.Hour {
			writeError(w, http.StatusBadRequest, "ttl must be a positive Go duration up to 5 years")
			return
		}
		ttl = d
	}
	now := a.cfg.Now()
	secret, hash := NewSecret(EnrolTokenPrefix)
	t := store.EnrolToken{ID: newID(), Hash: hash, Name: req.Name, MaxUses: req.MaxUses,
		ExpiresAt: now.Add(ttl).UnixMilli(), Labels: req.Labels, CreatedAt: now.UnixMilli()}
	if err := a.cfg.Store.CreateEnrolToken(r.Context(), t); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "enrol-token.create", t.ID, req.Name)
	writeJSON(w, http.StatusCreated, EnrolTokenCreated{EnrolTokenView: enrolTokenView(t), Token: secret})
}

func (a *API) revokeEnrolToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.cfg.Store.RevokeEnrolToken(r.Context(), id, a.cfg.Now().UnixMilli()); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "enrol-token.revoke", id, "")
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) listAPITokens(w http.ResponseWriter, r *http.Request) {
	toks, err := a.cfg.Store.ListAPITokens(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]APITokenView, 0, len(toks))
	for _, t := range toks {
		out = append(out, apiTokenView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) createAPIToken(w http.ResponseWriter, r *http.Request) {
	var req APITokenRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if !validTokenName(req.Name) {
		writeError(w, http.StatusBadRequest, "name is required, at most 128 bytes, one line")
		return
	}
	if _, err := ParseRole(req.Role); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	now := a.cfg.Now()
	var expires int64
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			writeError(w, http.StatusBadRequest, "ttl must be a positive Go duration")
			return
		}
		expires = now.Add(d).UnixMilli()
	}
	secret, hash := NewSecret(APITokenPrefix)
	t := store.APIToken{ID: newID(), Name: req.Name, Role: req.Role, Hash: hash, CreatedAt: now.UnixMilli(), ExpiresAt: expires}
	if err := a.cfg.Store.CreateAPIToken(r.Context(), t); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "api-token.create", t.ID, req.Name+" role="+req.Role)
	writeJSON(w, http.StatusCreated, APITokenCreated{APITokenView: apiTokenView(t), Token: secret})
}

func (a *API) revokeAPIToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := a.cfg.Store.RevokeAPIToken(r.Context(), id, a.cfg.Now().UnixMilli()); err != nil {
		a.fail(w, r, err)
		return
	}
	a.auditAs(r, "api-token.revoke", id, "")
	w.WriteHeader(http.StatusNoContent)
}
