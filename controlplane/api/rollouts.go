package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Rollouts is what the API asks of the rollout scheduler. Errors wrap the
// registry's or store's sentinels for their status; an action the
// rollout's phase does not allow wraps registry.ErrConflict.
type Rollouts interface {
	CreateRollout(ctx context.Context, actor string, spec []byte) (RolloutView, error)
	ListRollouts(ctx context.Context, q RolloutQuery) ([]RolloutView, error)
	Rollout(ctx context.Context, id string, withDevices bool) (RolloutView, error)
	ActRollout(ctx context.Context, id, actor, action, reason string) (RolloutView, error)
	RolloutAudit(ctx context.Context, id string, limit int, before int64) ([]AuditView, error)
}

// RolloutQuery selects rollouts to list, newest first.
type RolloutQuery struct {
	Model string
	Phase string
	Limit int
}

// RolloutView is a rollout as GET /v1/rollouts/{id} shows it.
type RolloutView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Model     string    `json:"model"`
	Release   uint64    `json:"release"`
	Phase     string    `json:"phase" doc:"running, paused, rolling_back, rolled_back, completed"`
	Stage     int       `json:"stage" doc:"index of the stage in progress (the last once completed)"`
	StageName string    `json:"stage_name,omitempty"`
	Stages    int       `json:"stages"`
	Reason    string    `json:"reason,omitempty"`
	Policy    string    `json:"failure_policy"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// Devices counts the devices the rollout touched, per device phase.
	Devices map[string]int `json:"devices"`
	// Gates are the latest gate evaluations (empty in lists).
	Gates []GateView `json:"gates,omitempty"`
	// DeviceStates lists each device's part (GET /v1/rollouts/{id}?devices=true).
	DeviceStates []RolloutDeviceView `json:"device_states,omitempty"`
	Spec         string              `json:"spec,omitempty" doc:"the spec as given (in show)"`
}

// GateView is one gate's evaluation.
type GateView struct {
	Gate        string    `json:"gate"`
	Status      string    `json:"status" doc:"pass, fail or wait"`
	Value       float64   `json:"value"`
	Baseline    float64   `json:"baseline,omitempty"`
	HasBaseline bool      `json:"has_baseline,omitempty"`
	Limit       string    `json:"limit"`
	Detail      string    `json:"detail"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
}

// RolloutDeviceView is one device's part in a rollout.
type RolloutDeviceView struct {
	Device     string `json:"device"`
	Phase      string `json:"phase"`
	Stage      int    `json:"stage"`
	From       uint64 `json:"from,omitempty" doc:"the release it ran when assigned"`
	RollbackTo uint64 `json:"rollback_to,omitempty"`
	Reason     string `json:"reason,omitempty"`
}

// RolloutAction is the body of POST /v1/rollouts/{id}/{action}.
type RolloutAction struct {
	Reason string `json:"reason,omitempty" doc:"why, for the audit log"`
}

// maxRolloutSpec caps a rollout spec's body (store.MaxRolloutSpecBytes).
const maxRolloutSpec = 256 << 10

func (a *API) rollouts(w http.ResponseWriter) (Rollouts, bool) {
	if a.cfg.Rollouts == nil {
		writeError(w, http.StatusServiceUnavailable, "rollouts are not configured on this server")
		return nil, false
	}
	return a.cfg.Rollouts, true
}

func (a *API) createRollout(w http.ResponseWriter, r *http.Request) {
	ro, ok := a.rollouts(w)
	if !ok {
		return
	}
	spec, err := readRaw(r, maxRolloutSpec)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := ro.CreateRollout(r.Context(), callerFrom(r.Context()).Actor(), spec)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (a *API) listRollouts(w http.ResponseWriter, r *http.Request) {
	ro, ok := a.rollouts(w)
	if !ok {
		return
	}
	q := RolloutQuery{Model: r.URL.Query().Get("model"), Phase: r.URL.Query().Get("phase")}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1000 {
			writeError(w, http.StatusBadRequest, "limit must be 1 to 1000")
			return
		}
		q.Limit = n
	}
	v, err := ro.ListRollouts(r.Context(), q)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if v == nil {
		v = []RolloutView{}
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) getRollout(w http.ResponseWriter, r *http.Request) {
	ro, ok := a.rollouts(w)
	if !ok {
		return
	}
	withDevices := false
	if s := r.URL.Query().Get("devices"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "devices must be true or false")
			return
		}
		withDevices = b
	}
	v, err := ro.Rollout(r.Context(), r.PathValue("id"), withDevices)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// actRollout serves POST /v1/rollouts/{id}/pause|resume|promote|abort.
func (a *API) actRollout(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ro, ok := a.rollouts(w)
		if !ok {
			return
		}
		var req RolloutAction
		if r.ContentLength != 0 {
			if err := decode(r, &req); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		if len(req.Reason) > 1000 {
			writeError(w, http.StatusBadRequest, "reason: at most 1000 bytes")
			return
		}
		v, err := ro.ActRollout(r.Context(), r.PathValue("id"), callerFrom(r.Context()).Actor(), action, req.Reason)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

func (a *API) rolloutAudit(w http.ResponseWriter, r *http.Request) {
	ro, ok := a.rollouts(w)
	if !ok {
		return
	}
	limit, before := 100, int64(0)
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10000 {
			writeError(w, http.StatusBadRequest, "limit must be 1 to 10000")
			return
		}
		limit = n
	}
	if s := r.URL.Query().Get("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("before must be a positive entry ID (got %q)", s))
			return
		}
		before = n
	}
	v, err := ro.RolloutAudit(r.Context(), r.PathValue("id"), limit, before)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if v == nil {
		v = []AuditView{}
	}
	writeJSON(w, http.StatusOK, v)
}
