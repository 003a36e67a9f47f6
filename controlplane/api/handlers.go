package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }

func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, Health{Status: "ok", Version: a.cfg.Version})
}

func (a *API) whoami(w http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Context())
	writeJSON(w, http.StatusOK, WhoAmI{TokenID: c.TokenID, Name: c.Name, User: c.User, Role: c.Role.String()})
}

func (a *API) metrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	if a.cfg.Metrics == nil {
		_, _ = io.WriteString(w, "{}")
		return
	}
	_, _ = io.WriteString(w, a.cfg.Metrics.String())
}

// enrol takes a protojson EnrolRequest. It is public: the bootstrap token
// in the body is the credential.
func (a *API) enrol(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("request body over %d bytes", maxBody))
		return
	}
	var req pb.EnrolRequest
	if err := protojson.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "request body: "+err.Error())
		return
	}
	resp, err := a.cfg.Registry.Enrol(r.Context(), &req)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	b, err := protojson.Marshal(resp)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

const (
	defaultPage = 500
	maxPage     = 5000
)

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	opts := store.ListOptions{After: q.Get("after"), Limit: defaultPage}
	if s := q.Get("selector"); s != "" {
		sel, err := ParseSelector(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		opts.Selector = sel
	}
	if s := q.Get("online"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "online must be true or false")
			return
		}
		opts.Online = &b
	}
	if s := q.Get("decommissioned"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, "decommissioned must be true or false")
			return
		}
		opts.IncludeDecommissioned = b
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1 to %d", maxPage))
			return
		}
		opts.Limit = n
	}
	devs, err := a.cfg.Store.ListDevices(r.Context(), opts)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := DeviceList{Devices: make([]DeviceView, 0, len(devs))}
	for _, d := range devs {
		out.Devices = append(out.Devices, deviceView(d, false))
	}
	if len(devs) == opts.Limit {
		out.Next = devs[len(devs)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
}

// ParseSelector parses "k=v,k2=v2".
func ParseSelector(s string) (map[string]string, error) {
	sel := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("selector %q: want k=v[,k=v…]", s)
		}
		sel[k] = v
	}
	return sel, nil
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	d, err := a.cfg.Store.Device(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceView(d, true))
}

func (a *API) patchLabels(w http.ResponseWriter, r *http.Request) {
	var p LabelPatch
	if err := decode(r, &p); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if len(p.Set) == 0 && len(p.Remove) == 0 {
		writeError(w, http.StatusBadRequest, "nothing to set or remove")
		return
	}
	d, err := a.cfg.Registry.SetLabels(r.Context(), callerFrom(r.Context()).Actor(), r.PathValue("id"), p.Set, p.Remove)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceView(d, false))
}

func (a *API) decommission(w http.ResponseWriter, r *http.Request) {
	d, err := a.cfg.Registry.Decommission(r.Context(), callerFrom(r.Context()).Actor(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceView(d, false))
}

func (a *API) command(w http.ResponseWriter, r *http.Request) {
	var c CommandRequest
	if err := decode(r, &c); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	timeout := 10 * time.Second
	if c.Timeout != "" {
		d, err := time.ParseDuration(c.Timeout)
		if err != nil || d <= 0 || d > time.Minute {
			writeError(w, http.StatusBadRequest, "timeout must be a Go duration up to 60s")
			return
		}
		timeout = d
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	rep, err := a.cfg.Registry.CommandWith(ctx, callerFrom(r.Context()).Actor(), r.PathValue("id"), c.Kind,
		registry.CommandOptions{Level: c.Level, Contains: c.Contains, Limit: c.Limit})
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			writeError(w, http.StatusGatewayTimeout, err.Error())
			return
		}
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, CommandResponse{OK: rep.OK, Error: rep.Error, RoundTripMs: float64(rep.RoundTrip.Microseconds()) / 1000,
		Output: rep.Output})
}

func (a *API) listAudit(w http.ResponseWriter, r *http.Request) {
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
			writeError(w, http.StatusBadRequest, "before must be a positive entry ID")
			return
		}
		before = n
	}
	entries, err := a.cfg.Store.ListAudit(r.Context(), limit, before)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	out := make([]AuditView, 0, len(entries))
	for _, e := range entries {
		out = append(out, AuditView{ID: e.ID, At: time.UnixMilli(e.At).UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	writeJSON(w, http.StatusOK, out)
}
