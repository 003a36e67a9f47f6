package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
)

// storeTelemetry answers from the real store through controlplane/telemetry,
// without baselines, and remembers the last query it was asked.
type storeTelemetry struct {
	st   *store.Store
	last *api.DriftQuery
}

func (s *storeTelemetry) Drift(ctx context.Context, q api.DriftQuery) (api.DriftReport, error) {
	s.last = &q
	rep, err := telemetry.DriftReport(ctx, s.st, nil, store.SummaryFilter{Model: "digits", Release: q.Release, DeviceID: q.Device,
		Selector: q.Selector, FromMs: q.From.UnixMilli(), ToMs: q.To.UnixMilli()})
	if err != nil {
		return api.DriftReport{}, err
	}
	out := api.DriftReport{From: q.From, To: q.To}
	for _, r := range rep.Releases {
		out.Releases = append(out.Releases, api.ReleaseDrift{Model: r.Model, Release: r.Release, Requests: r.Requests})
	}
	return out, nil
}

func (s *storeTelemetry) DeviceEvents(ctx context.Context, q api.EventQuery) ([]api.EventView, error) {
	evs, err := s.st.ListEvents(ctx, store.EventFilter{DeviceID: q.Device, Levels: q.Levels, Limit: q.Limit})
	out := []api.EventView{}
	for _, e := range evs {
		out = append(out, api.EventView{Code: e.Code, Level: e.Level})
	}
	return out, err
}

// TestTelemetryQueries: the drift and events routes read their parameters
// strictly (each bad one a 400 naming it, an unknown device 404) and pass
// the range on; viewers may read.
func TestTelemetryQueries(t *testing.T) {
	f := newFixture(t)
	tm := &storeTelemetry{st: f.store}
	now := time.UnixMilli(1_760_000_000_000).UTC()
	a := api.New(api.Config{Store: f.store, Registry: registry.New(registry.Config{Store: f.store}), Telemetry: tm,
		Now: func() time.Time { return now }})
	f.srv = httptest.NewServer(a)
	t.Cleanup(f.srv.Close)
	if _, err := f.store.StoreTelemetry(context.Background(), []store.TelemetryMessage{{DeviceID: "dev-000", Epoch: "e", Sequence: 1,
		Events: []store.Event{{AtMs: 5, Level: "error", Code: "model.crash"}, {AtMs: 6, Level: "info", Code: "agent.start"}}}}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		path string
		want int
	}{
		"negative since":      {"/v1/drift?since=-1h", 400},
		"bad since":           {"/v1/drift?since=soon", 400},
		"since and from":      {"/v1/drift?since=1h&from=1", 400},
		"bad from":            {"/v1/drift?from=yesterday", 400},
		"empty range":         {"/v1/drift?from=10&to=10", 400},
		"too long":            {"/v1/drift?from=0&to=" + url.QueryEscape(now.Format(time.RFC3339)), 400},
		"release zero":        {"/v1/drift?model=digits&release=0", 400},
		"release not number":  {"/v1/drift?model=digits&release=x", 400},
		"release no model":    {"/v1/drift?release=1", 400},
		"device and selector": {"/v1/drift?device=dev-000&selector=site=a", 400},
		"bad selector":        {"/v1/drift?selector=site", 400},
		"bad label key":       {"/v1/drift?selector=" + url.QueryEscape("bad key=x"), 400},
		"unknown device":      {"/v1/drift?device=dev-404", 404},
		"events bad level":    {"/v1/devices/dev-000/events?level=fatal", 400},
		"events bad limit":    {"/v1/devices/dev-000/events?limit=0", 400},
		"events huge limit":   {"/v1/devices/dev-000/events?limit=99999", 400},
		"events unknown":      {"/v1/devices/dev-404/events", 404},
		"events bad since":    {"/v1/devices/dev-000/events?since=0s", 400},
		"fleet default range": {"/v1/drift", 200},
		"cohort and release":  {"/v1/drift?model=digits&release=2&selector=site=a&since=2h", 200},
	} {
		code, body := f.do(t, "viewer", "GET", c.path, nil)
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", name, code, body, c.want)
		}
		var e api.ErrorBody
		if code >= 400 && (json.Unmarshal(body, &e) != nil || e.Error == "") {
			t.Errorf("%s: error body %s", name, body)
		}
	}
	code, body := f.do(t, "viewer", "GET", "/v1/drift?model=digits&release=2&selector=site=a&since=2h", nil)
	var rep api.DriftReport
	if code != 200 || json.Unmarshal(body, &rep) != nil || rep.Releases == nil || tm.last.Release != 2 ||
		tm.last.Selector["site"] != "a" || !tm.last.To.Equal(now) || tm.last.To.Sub(tm.last.From) != 2*time.Hour {
		t.Fatalf("cohort query: %d %s, asked %+v", code, body, tm.last)
	}
	code, body = f.do(t, "viewer", "GET", "/v1/devices/dev-000/events?level=error", nil)
	var evs []api.EventView
	if code != 200 || json.Unmarshal(body, &evs) != nil || len(evs) != 1 || evs[0].Code != "model.crash" {
		t.Fatalf("events: %d %s", code, body)
	}
	if code, _ := f.do(t, "", "GET", "/v1/drift", nil); code != http.StatusUnauthorized {
		t.Fatalf("anonymous drift: %d", code)
	}
}
