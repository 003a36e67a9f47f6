package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
)

// Support asks devices for support bundles and keeps what they upload
// (controlplane/supportbundle); nil: its routes answer 503.
type Support interface {
	// Request expects an upload and sends the device the command; it
	// returns once the device answered that it built the bundle.
	Request(ctx context.Context, actor, deviceID string) (supportbundle.Info, error)
	List(deviceID string) ([]supportbundle.Info, error)
	Wait(ctx context.Context, deviceID, id string) (supportbundle.Info, error)
	// Open opens a ready bundle (Info.Size bytes) and returns its
	// detached signature.
	Open(deviceID, id string) (io.ReadCloser, supportbundle.Info, []byte, error)
}

// SupportBundleView is one support bundle a device uploaded or is
// uploading.
type SupportBundleView = supportbundle.Info

// maxSupportWait caps ?wait= on a support bundle.
const maxSupportWait = 5 * time.Minute

func (a *API) supportRoutes() []route {
	return []route{
		{Method: "POST", Path: "/v1/devices/{id}/support-bundles", Role: Operator, Summary: "Ask the device for a support bundle (signed, redacted logs, journal, status, configuration): the device builds it and uploads it in acknowledged chunks within its telemetry budget; answers once the device accepted",
			Response: SupportBundleView{}, Status: http.StatusAccepted, Handler: a.requestSupport, Query: []param{{"timeout", "how long to wait for the device's answer (Go duration, default 30s, at most 60s)"}}},
		{Method: "GET", Path: "/v1/devices/{id}/support-bundles", Role: Viewer, Summary: "The device's support bundles, newest first: state, size, digest, how the signature was verified",
			Response: []SupportBundleView{}, Handler: a.listSupport},
		{Method: "GET", Path: "/v1/devices/{id}/support-bundles/{upload}", Role: Viewer, Summary: "One support bundle's state; with wait, once it is ready or failed",
			Response: SupportBundleView{}, Handler: a.getSupport, Query: []param{{"wait", "wait up to this long while it is uploading (Go duration, at most 5m)"}}},
		{Method: "GET", Path: "/v1/devices/{id}/support-bundles/{upload}/bundle", Role: Operator, Summary: "Download a ready support bundle (tar.gz); X-Flotilla-Signature carries its detached signature (base64 JSON). Operator: it holds the device's logs and configuration",
			Response: []byte{}, Handler: a.downloadSupport},
	}
}

func (a *API) support(w http.ResponseWriter) bool {
	if a.cfg.Support == nil {
		writeError(w, http.StatusServiceUnavailable, "support bundles are not served")
		return false
	}
	return true
}

func (a *API) supportFail(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, supportbundle.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, supportbundle.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, supportbundle.ErrNotReady):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, err.Error())
	default:
		a.fail(w, r, err)
	}
}

func durationParam(r *http.Request, name string, def, most time.Duration) (time.Duration, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 || d > most {
		return 0, fmt.Errorf("%s must be a Go duration up to %s", name, most)
	}
	return d, nil
}

func (a *API) requestSupport(w http.ResponseWriter, r *http.Request) {
	if !a.support(w) {
		return
	}
	d, err := durationParam(r, "timeout", 30*time.Second, time.Minute)
	if err != nil || d == 0 {
		writeError(w, http.StatusBadRequest, "timeout must be a Go duration up to 60s")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	in, err := a.cfg.Support.Request(ctx, callerFrom(r.Context()).Actor(), r.PathValue("id"))
	if err != nil {
		a.supportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, in)
}

func (a *API) listSupport(w http.ResponseWriter, r *http.Request) {
	if !a.support(w) {
		return
	}
	out, err := a.cfg.Support.List(r.PathValue("id"))
	if err != nil {
		a.supportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getSupport(w http.ResponseWriter, r *http.Request) {
	if !a.support(w) {
		return
	}
	d, err := durationParam(r, "wait", 0, maxSupportWait)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), d)
	defer cancel()
	in, err := a.cfg.Support.Wait(ctx, r.PathValue("id"), r.PathValue("upload"))
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		a.supportFail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, in)
}

func (a *API) downloadSupport(w http.ResponseWriter, r *http.Request) {
	if !a.support(w) {
		return
	}
	dev, id := r.PathValue("id"), r.PathValue("upload")
	f, in, sig, err := a.cfg.Support.Open(dev, id)
	if err != nil {
		a.supportFail(w, r, err)
		return
	}
	defer f.Close()
	if _, err := a.cfg.Store.AppendAudit(r.Context(), store.AuditEntry{At: a.cfg.Now().UnixMilli(), Actor: callerFrom(r.Context()).Actor(),
		Action: "device.support-bundle.download", Target: dev, Detail: id}); err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/gzip")
	w.Header().Set("Content-Length", strconv.FormatInt(in.Size, 10))
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="flotilla-support-%s-%s.tar.gz"`, dev, id))
	w.Header().Set("X-Flotilla-Signature", base64.StdEncoding.EncodeToString(sig))
	w.Header().Set("X-Flotilla-Sha256", in.SHA256)
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}
