package promexport

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flotilla-edge/flotilla/promscrape"
)

// snapshotSource answers a fixed snapshot and error.
type snapshotSource struct {
	snap Snapshot
	err  error
}

func (s snapshotSource) MetricsSnapshot(context.Context) (Snapshot, error) { return s.snap, s.err }

// TestRolloutSeriesAndPartialScrape: each unfinished rollout's stage and
// devices by phase are exported under its ID; a Source that fails part
// way exports what it read and says so in flotilla_metrics_source_up; an
// external broker (MQTTClients -1) exports no client count.
func TestRolloutSeriesAndPartialScrape(t *testing.T) {
	src := snapshotSource{err: errors.New("store unavailable"), snap: Snapshot{DevicesTotal: 7, MQTTClients: -1,
		RolloutPhases: map[string]int64{"running": 1, "completed": 4},
		Rollouts: []Rollout{{ID: "ro-1", Name: "digits 2", Model: "digits", Release: 2, Phase: "running", Stage: 1,
			Devices: map[string]int64{"assigned": 3, "committed": 5}}}}}
	e := New(src, Options{})
	hs := httptest.NewServer(e.Handler())
	defer hs.Close()
	f, err := promscrape.Get(context.Background(), http.DefaultClient, hs.URL)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"flotilla_metrics_source_up", nil, 0},
		{"flotilla_devices", nil, 7},
		{"flotilla_rollouts", []string{"phase", "completed"}, 4},
		{"flotilla_rollout_stage", []string{"rollout", "ro-1", "model", "digits", "release", "2", "phase", "running"}, 1},
		{"flotilla_rollout_devices", []string{"rollout", "ro-1", "phase", "committed"}, 5},
		{"flotilla_rollout_devices", []string{"rollout", "ro-1", "phase", "assigned"}, 3},
	} {
		if v, ok := f.Value(c.name, c.labels...); !ok || v != c.want {
			t.Errorf("%s%v = %v, %v; want %v", c.name, c.labels, v, ok, c.want)
		}
	}
	if _, ok := f.Value("flotilla_mqtt_clients"); ok {
		t.Error("an MQTT client count with an external broker")
	}
	if _, ok := f.Value("process_resident_memory_bytes"); ok {
		t.Error("process collector without Options.Process")
	}
}

// TestInstrumentLabels: the route label is the matched pattern without its
// method; an unknown method a client invents is "other", so clients cannot
// grow the label set.
func TestInstrumentLabels(t *testing.T) {
	e := New(snapshotSource{}, Options{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/things/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) })
	hs := httptest.NewServer(e.Instrument(mux))
	defer hs.Close()
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/things/a"}, {"GET", "/v1/things/b"}, {"BREW", "/v1/things/a"}, {"GET", "/nope"},
	} {
		r, _ := http.NewRequest(req.method, hs.URL+req.path, nil)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	ms := httptest.NewServer(e.Handler())
	defer ms.Close()
	f, err := promscrape.Get(context.Background(), http.DefaultClient, ms.URL)
	if err != nil {
		t.Fatal(err)
	}
	const h = "flotilla_api_request_duration_seconds"
	if v, _ := f.Value(h, "route", "/v1/things/{id}", "method", "GET", "code", "418"); v != 2 {
		t.Errorf("GET /v1/things/{id} 418: %v, want 2", v)
	}
	if v, _ := f.Value(h, "method", "other"); v != 1 {
		t.Errorf("method other: %v, want 1", v)
	}
	// BREW matches no GET pattern and falls to the catch-all, as /nope does.
	if v, _ := f.Value(h, "route", "unmatched", "code", "404"); v != 2 {
		t.Errorf("unmatched 404: %v, want 2", v)
	}
}
