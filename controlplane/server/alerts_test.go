package server

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/rollout"
)

// TestAlertsAlertmanagerPayload posts a pass's breach and on-device
// rollback to two webhooks, one of them failing, and checks the payload is
// what Alertmanager's /api/v2/alerts takes: a JSON array of alerts with
// labels, annotations and startsAt.
func TestAlertsAlertmanagerPayload(t *testing.T) {
	var mu sync.Mutex
	var got [][]map[string]any
	var contentType string
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var alerts []map[string]any
		if err := json.Unmarshal(b, &alerts); err != nil {
			t.Errorf("payload is not a JSON array of alerts: %v: %s", err, b)
		}
		mu.Lock()
		got, contentType = append(got, alerts), r.Header.Get("Content-Type")
		mu.Unlock()
	}))
	defer ok.Close()
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer failing.Close()

	s := &Server{cfg: Config{Alerts: AlertConfig{Webhooks: []string{ok.URL, failing.URL}, Timeout: 5 * time.Second}},
		log: slog.New(slog.DiscardHandler), metrics: new(expvar.Map).Init()}
	s.life, s.end = context.WithCancel(context.Background())
	defer s.end()
	if err := s.openAlerts(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"file:///etc/passwd", "ftp://x/y", "http://", "::"} {
		s2 := &Server{cfg: Config{Alerts: AlertConfig{Webhooks: []string{bad}}}}
		if err := s2.openAlerts(); err == nil {
			t.Errorf("webhook %q accepted", bad)
		}
	}

	spec, err := rollout.Parse([]byte("bundle: {model: digits, release: 7}\nstages: [{count: 1}, {percent: 100}]\ngates: {error_rate: {max: 0.02}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &rollout.Record{Spec: spec, State: rollout.NewState("ro-1", 0)}
	breach := &rollout.Evaluation{Gate: rollout.GateErrorRate, Status: "fail", Value: 0.3, Limit: "at most 0.02", Detail: "0.3 > 0.02"}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	s.alerts.rolloutDecisions(rec, []rollout.Decision{
		{Kind: rollout.DecideAssign, Device: "d1", Model: "digits", Release: 7}, // no alert
		{Kind: rollout.DecidePause, Reason: "gate error_rate breached", Breach: breach},
		{Kind: rollout.DecideDeviceFailed, Device: "d2", Model: "digits", Release: 7, Reason: "release 7 rolled back: crashes"},
	}, now)
	s.bg.Wait()

	if len(got) != 1 || len(got[0]) != 2 {
		t.Fatalf("webhook got %v, want one POST of 2 alerts", got)
	}
	if contentType != "application/json" {
		t.Errorf("content type %q", contentType)
	}
	gate, dev := got[0][0], got[0][1]
	labels := gate["labels"].(map[string]any)
	for k, want := range map[string]string{"alertname": AlertGateBreached, "severity": "critical", "rollout": "ro-1", "model": "digits",
		"release": "7", "gate": "error_rate", "action": "pause"} {
		if labels[k] != want {
			t.Errorf("gate alert label %s = %v, want %s", k, labels[k], want)
		}
	}
	if gate["startsAt"] != "2026-11-30T12:00:00Z" {
		t.Errorf("startsAt %v", gate["startsAt"])
	}
	if ann := gate["annotations"].(map[string]any); ann["value"] != "0.3" || ann["limit"] != "at most 0.02" || ann["summary"] == "" {
		t.Errorf("gate alert annotations %v", ann)
	}
	dl := dev["labels"].(map[string]any)
	if dl["alertname"] != AlertDeviceRollback || dl["device"] != "d2" {
		t.Errorf("device alert labels %v", dl)
	}
	if n := s.metrics.Get("alerts_sent").String(); n != "2" {
		t.Errorf("alerts_sent %s", n)
	}
	if n := s.metrics.Get("alerts_failed").String(); n != "1" {
		t.Errorf("alerts_failed %s, want the failing webhook counted", n)
	}
}

// TestAlertsRepeat: an alert about one thing is left out while Repeat has
// not passed since it was sent, sent again after; alerts without a key are
// never left out; the remembered keys stay bounded.
func TestAlertsRepeat(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), metrics: new(expvar.Map).Init()}
	a := &alerter{s: s, repeat: time.Hour, sent: map[string]time.Time{}}
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	al := func(key string) Alert { return Alert{Labels: map[string]string{"alertname": "x"}, key: key} }
	if got := a.fresh([]Alert{al("k"), al("k"), al(""), al("")}, t0); len(got) != 3 {
		t.Fatalf("first: %d alerts, want 3 (one k, two without a key)", len(got))
	}
	if got := a.fresh([]Alert{al("k")}, t0.Add(59*time.Minute)); len(got) != 0 {
		t.Fatalf("within the hour: %d alerts, want none", len(got))
	}
	if got := a.fresh([]Alert{al("k")}, t0.Add(time.Hour)); len(got) != 1 {
		t.Fatalf("after the hour: %d alerts, want 1", len(got))
	}
	if n := s.metrics.Get("alerts_deduplicated").String(); n != "2" {
		t.Errorf("alerts_deduplicated %s, want 2", n)
	}
	for i := range maxAlertKeys + 10 {
		a.fresh([]Alert{al(fmt.Sprint(i))}, t0.Add(2*time.Hour))
	}
	if len(a.sent) > maxAlertKeys {
		t.Errorf("%d keys remembered, at most %d", len(a.sent), maxAlertKeys)
	}
}
