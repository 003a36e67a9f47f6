package rollout

import (
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseExample(t *testing.T) {
	b, err := os.ReadFile("testdata/canary.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bundle != (Bundle{Model: "digits", Release: 7, RollbackRelease: 8}) {
		t.Errorf("bundle %+v", s.Bundle)
	}
	if len(s.Stages) != 3 || *s.Stages[0].Percent != 5 || s.Stages[0].Bake != 30*time.Minute || s.Stages[0].Name != "canary" || s.Stages[2].Bake != 0 {
		t.Errorf("stages %+v", s.Stages)
	}
	if s.FailurePolicy != PolicyRollback || s.RateLimit.DevicesPerMinute != 50 {
		t.Errorf("policy %q, rate %d", s.FailurePolicy, s.RateLimit.DevicesPerMinute)
	}
	g := s.Gates
	if g.Window != 10*time.Minute || g.MinDevicesReporting != 3 || *g.MinRequests != 200 || *g.ErrorRate.Max != 0.02 ||
		*g.LatencyP95.MaxRatio != 1.25 || *g.Rollbacks.Max != 0 || *g.Drift.MaxJSIncrease != 0.05 || g.Drift.MaxPSI != nil {
		t.Errorf("gates %+v", g)
	}
	if m := s.Maintenance; len(m.Windows) != 2 || m.Windows[0].Start != "22:00" || m.Windows[1].End != "24:00" {
		t.Errorf("maintenance %+v", m)
	}
	if !reflect.DeepEqual(s.Selector, Selector{Labels: map[string]string{"role": "camera"}, Arch: []string{"arm64", "amd64"}, Runtimes: []string{"onnx"}}) {
		t.Errorf("selector %+v", s.Selector)
	}
}

// The same spec in JSON parses to the same thing.
func TestParseJSON(t *testing.T) {
	j := `{"bundle": {"model": "digits", "release": 7, "rollback_release": 8},
	  "selector": {"labels": {"role": "camera"}, "arch": ["arm64", "amd64"], "runtimes": ["onnx"]},
	  "stages": [{"name": "canary", "percent": 5, "bake": "30m"}, {"percent": 25, "bake": "1h"}, {"percent": 100}],
	  "gates": {"window": "10m", "min_devices_reporting": 3, "min_requests": 200,
	    "error_rate": {"max": 0.02, "max_increase": 0.005}, "latency_p95": {"max_ms": 80, "max_ratio": 1.25},
	    "rollbacks": {"max": 0}, "shadow_disagreement": {"max": 0.05}, "drift": {"max_js": 0.1, "max_js_increase": 0.05}},
	  "failure_policy": "rollback", "rate_limit": {"devices_per_minute": 50},
	  "name": "digits 7 to the cameras",
	  "maintenance": {"timezone_label": "tz", "default_timezone": "UTC", "windows": [
	    {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "22:00", "end": "06:00"},
	    {"days": ["sat", "sun"], "start": "00:00", "end": "24:00"}]}}`
	fromJSON, err := Parse([]byte(j))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("testdata/canary.yaml")
	fromYAML, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		a, _ := json.Marshal(fromJSON)
		c, _ := json.Marshal(fromYAML)
		t.Fatalf("JSON and YAML differ:\n%s\n%s", a, c)
	}
}

func TestParseDefaults(t *testing.T) {
	s, err := Parse([]byte("bundle: {model: m, release: 2}\nstages: [{count: 10}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if s.FailurePolicy != PolicyPause || s.Gates.Window != DefaultWindow || s.Gates.MinDevicesReporting != 1 ||
		*s.Gates.MinRequests != DefaultMinRequests || s.Maintenance != nil || s.RateLimit.DevicesPerMinute != 0 {
		t.Fatalf("defaults: %+v", s)
	}
}

func TestParseRefuses(t *testing.T) {
	const ok = "bundle: {model: m, release: 2}\nstages: [{percent: 10}, {percent: 100}]\n"
	if _, err := Parse([]byte(ok)); err != nil {
		t.Fatalf("base spec: %v", err)
	}
	for _, tc := range []struct{ name, spec, want string }{
		{"unknown top field", ok + "stagez: []\n", "stagez (line 3): unknown field"},
		{"unknown nested field", ok + "gates: {error_rate: {maxx: 1}}\n", "gates.error_rate.maxx (line 3): unknown field"},
		{"string for number", ok + "gates: {error_rate: {max: high}}\n", `gates.error_rate.max (line 3): want a finite number, got "high"`},
		{"quoted number", ok + "rate_limit: {devices_per_minute: \"5\"}\n", `rate_limit.devices_per_minute (line 3): want a whole number`},
		{"fraction for count", "bundle: {model: m, release: 2}\nstages: [{count: 1.5}]\n", "stages[0].count (line 2): want a whole number"},
		{"negative release", "bundle: {model: m, release: -2}\nstages: [{count: 1}]\n", "bundle.release (line 1): want a whole number ≥ 0"},
		{"number for string", "bundle: {model: 7, release: 2}\nstages: [{count: 1}]\n", "bundle.model (line 1): want a string"},
		{"list for mapping", ok + "gates: [1]\n", "gates (line 3): want a mapping, got a list"},
		{"mapping for list", "bundle: {model: m, release: 2}\nstages: {count: 1}\n", "stages (line 2): want a list, got a mapping"},
		{"bad duration", "bundle: {model: m, release: 2}\nstages: [{count: 1, bake: 10}]\n", "stages[0].bake (line 2): want a duration"},
		{"null", ok + "gates: {error_rate: null}\n", "gates.error_rate (line 3): must not be null"},
		{"duplicate key", ok + "failure_policy: pause\nfailure_policy: rollback\n", "failure_policy (line 4): duplicate key"},
		{"alias", "bundle: &b {model: m, release: 2}\nstages: [{count: 1}]\nselector: {labels: *b}\n", "bundle (line 1): anchors and aliases"},
		{"two documents", ok + "---\n" + ok, "more than one document"},
		{"not yaml", "bundle: [", "invalid rollout spec"},
		{"empty", "", "invalid rollout spec"},
		{"no model", "bundle: {release: 2}\nstages: [{count: 1}]\n", "bundle.model: required"},
		{"bad model", "bundle: {model: ../x, release: 2}\nstages: [{count: 1}]\n", "bundle.model: required"},
		{"zero release", "bundle: {model: m, release: 0}\nstages: [{count: 1}]\n", "bundle.release: required, > 0"},
		{"rollback release below", "bundle: {model: m, release: 4, rollback_release: 3}\nstages: [{count: 1}]\n", "bundle.rollback_release: 3 must be above release 4"},
		{"no stages", "bundle: {model: m, release: 2}\n", "stages: at least one stage"},
		{"percent and count", "bundle: {model: m, release: 2}\nstages: [{count: 1, percent: 5}]\n", "stages[0]: exactly one of percent and count"},
		{"neither", "bundle: {model: m, release: 2}\nstages: [{bake: 1m}]\n", "stages[0]: exactly one of percent and count"},
		{"percent over 100", "bundle: {model: m, release: 2}\nstages: [{percent: 101}]\n", "stages[0].percent: 101 is not in (0, 100]"},
		{"zero count", "bundle: {model: m, release: 2}\nstages: [{count: 0}]\n", "stages[0].count: 0 must be > 0"},
		{"not cumulative", "bundle: {model: m, release: 2}\nstages: [{percent: 50}, {percent: 10}]\n", "stages[1].percent: stages are cumulative"},
		{"negative bake", "bundle: {model: m, release: 2}\nstages: [{count: 1, bake: -1m}]\n", "stages[0].bake: must not be negative"},
		{"policy", ok + "failure_policy: retry\n", `failure_policy: "retry": want pause or rollback`},
		{"rate", ok + "gates: {error_rate: {max: 1.5}}\n", "gates.error_rate.max: 1.5 is not a rate in [0, 1]"},
		{"empty gate", ok + "gates: {latency_p95: {}}\n", "gates.latency_p95: set max_ms, max_ratio or both"},
		{"ratio below 1", ok + "gates: {latency_p95: {max_ratio: 0.5}}\n", "gates.latency_p95.max_ratio: 0.5 is below 1"},
		{"window", ok + "gates: {window: 1s}\n", "gates.window: 1s is not between 1m and 168h"},
		{"min reporting", ok + "gates: {min_devices_reporting: -1}\n", "gates.min_devices_reporting: must be ≥ 1"},
		{"rate limit", ok + "rate_limit: {devices_per_minute: -1}\n", "rate_limit.devices_per_minute: must not be negative"},
		{"label key", "bundle: {model: m, release: 2}\nstages: [{count: 1}]\nselector: {labels: {\"a b\": x}}\n", "selector.labels.a b: a label key"},
		{"fact", "bundle: {model: m, release: 2}\nstages: [{count: 1}]\nselector: {arch: [\"x y\"]}\n", "selector.arch[0]"},
		{"zone", ok + "maintenance: {default_timezone: Mars/Olympus, windows: [{start: \"01:00\", end: \"02:00\"}]}\n", "maintenance.default_timezone: \"Mars/Olympus\" is not a known time zone"},
		{"day", ok + "maintenance: {windows: [{days: [funday], start: \"01:00\", end: \"02:00\"}]}\n", "maintenance.windows[0].days[0]: \"funday\""},
		{"clock", ok + "maintenance: {windows: [{start: \"25:00\", end: \"02:00\"}]}\n", "maintenance.windows[0].start: \"25:00\""},
		{"empty window", ok + "maintenance: {windows: [{start: \"02:00\", end: \"02:00\"}]}\n", "maintenance.windows[0].end: equals start"},
		{"no windows", ok + "maintenance: {}\n", "maintenance.windows: at least one window"},
		{"too large", ok + "name: " + strings.Repeat("x", MaxSpecBytes) + "\n", "bytes, at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.spec))
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant an ErrInvalidSpec containing %q", err, tc.want)
			}
		})
	}
}

func TestStageTarget(t *testing.T) {
	s, err := Parse([]byte("bundle: {model: m, release: 2}\nstages: [{percent: 10}, {percent: 33.3}, {percent: 100}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ stage, n, want int }{
		{0, 0, 0}, {0, 1, 1}, {0, 30, 3}, {0, 31, 4}, {0, 100, 10}, {1, 100, 34}, {1, 3, 1}, {2, 7, 7},
	} {
		if got := s.stageTarget(tc.stage, tc.n); got != tc.want {
			t.Errorf("stage %d of %d: %d, want %d", tc.stage, tc.n, got, tc.want)
		}
	}
	c, _ := Parse([]byte("bundle: {model: m, release: 2}\nstages: [{count: 5}]\n"))
	if got := c.stageTarget(0, 3); got != 3 {
		t.Errorf("count 5 of 3 devices: %d", got)
	}
}
