package api

import (
	"context"
	"net/http"
	"time"
)

// BundleLister lists the released bundles; the server's bundle service
// implements it beside Bundles. Without it GET /v1/bundles answers 503.
type BundleLister interface {
	ListBundles(ctx context.Context) (BundleList, error)
}

// BundleList is the release repository's released bundles.
type BundleList struct {
	RootVersion    int64            `json:"root_version"`
	TargetsVersion int64            `json:"targets_version"`
	TargetsExpires time.Time        `json:"targets_expires"`
	SignedBy       []string         `json:"signed_by" doc:"key IDs whose signatures targets.json carries"`
	Threshold      int              `json:"threshold" doc:"signatures the root requires on targets.json"`
	Bundles        []ReleasedBundle `json:"bundles"`
}

// ReleasedBundle is one released target with, once its manifest is
// uploaded, what the manifest says.
type ReleasedBundle struct {
	ReleaseTarget
	Files    int           `json:"files,omitempty"`
	Chunks   int           `json:"chunks,omitempty"`
	Bytes    uint64        `json:"bytes,omitempty" doc:"the files' total size"`
	Variants []VariantView `json:"variants,omitempty"`
}

// VariantView is one way to run a bundle.
type VariantView struct {
	Runtime      string   `json:"runtime"`
	Accelerators []string `json:"accelerators,omitempty"`
	Platforms    []string `json:"platforms,omitempty"`
}

func (a *API) listBundles(w http.ResponseWriter, r *http.Request) {
	l, ok := a.cfg.Bundles.(BundleLister)
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "bundle delivery is not configured on this server")
		return
	}
	v, err := l.ListBundles(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
