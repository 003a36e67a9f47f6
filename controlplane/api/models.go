package api

import (
	"context"
	"net/http"
)

// ModelReports answers what devices last reported running; the server's
// bundle service implements it beside Bundles. Without it the routes
// answer 503.
type ModelReports interface {
	DeviceModels(ctx context.Context, device string) ([]ModelView, error)
	FleetModels(ctx context.Context) ([]ModelVersionView, error)
}

// ModelView is one model on a device as it last reported it: the active
// slot and release, and what is staged in the other slot.
type ModelView struct {
	Name          string `json:"name"`
	ActiveRelease uint64 `json:"active_release"`
	ActiveVersion string `json:"active_version,omitempty"`
	ActiveSlot    string `json:"active_slot,omitempty"`
	Health        string `json:"health" doc:"healthy, probation, unhealthy, rolled_back or unknown"`
	LastError     string `json:"last_error,omitempty"`
	Rollbacks     uint64 `json:"rollbacks,omitempty"`
	StagedRelease uint64 `json:"staged_release,omitempty"`
	StagedVersion string `json:"staged_version,omitempty"`
	StagedSlot    string `json:"staged_slot,omitempty"`
}

// ModelVersionView counts the devices running one release of a model.
type ModelVersionView struct {
	Model    string         `json:"model"`
	Release  uint64         `json:"release"`
	Version  string         `json:"version,omitempty"`
	Devices  int            `json:"devices"`
	ByHealth map[string]int `json:"by_health"`
}

func (a *API) modelReports(w http.ResponseWriter) (ModelReports, bool) {
	m, ok := a.cfg.Bundles.(ModelReports)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "bundle delivery is not configured on this server")
	}
	return m, ok
}

func (a *API) deviceModels(w http.ResponseWriter, r *http.Request) {
	m, ok := a.modelReports(w)
	if !ok {
		return
	}
	if _, err := a.cfg.Store.Device(r.Context(), r.PathValue("id")); err != nil {
		a.fail(w, r, err)
		return
	}
	v, err := m.DeviceModels(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) fleetModels(w http.ResponseWriter, r *http.Request) {
	m, ok := a.modelReports(w)
	if !ok {
		return
	}
	v, err := m.FleetModels(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
