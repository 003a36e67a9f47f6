package server_test

import (
	"context"
	"encoding/json"
	"expvar"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// alertReceiver is a real HTTP webhook that keeps every alert posted.
type alertReceiver struct {
	mu     sync.Mutex
	alerts []map[string]any
	posts  int
}

func (rc *alertReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var as []map[string]any
	if err := json.Unmarshal(b, &as); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.alerts = append(rc.alerts, as...)
	rc.posts++
	rc.mu.Unlock()
}

func (rc *alertReceiver) got() []map[string]any {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]map[string]any(nil), rc.alerts...)
}

func metric(srv *server.Server, name string) int64 {
	switch v := srv.Metrics().Get(name).(type) {
	case *expvar.Int:
		return v.Value()
	case expvar.Func:
		n, _ := v.Value().(uint64)
		return int64(n)
	}
	return 0
}

// TestDriftAndRollbackAlertsOutsideRollouts: with no rollout running, a
// device's telemetry with on-device drift scores over the thresholds, its
// rollback events and a reported state whose rollback count grew reach a
// real webhook in Alertmanager's format, once each per device, model and
// release: the same drift in a later window, the same rollback told again
// by an event, and a resent (duplicate) message raise nothing more.
func TestDriftAndRollbackAlertsOutsideRollouts(t *testing.T) {
	rc := &alertReceiver{}
	hook := httptest.NewServer(rc)
	defer hook.Close()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		Logger: testLogger(t), Alerts: server.AlertConfig{Webhooks: []string{hook.URL}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	admin := adminClient(t, srv, dir)
	tok, err := admin.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "dev-d", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, srv, tok.Token, "dev-d")
	dev, err := connect(t, srv, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}

	now := time.Now().UnixMilli()
	summary := func(rel uint64, start int64, alert bool) *pb.WindowSummary {
		return &pb.WindowSummary{Model: "digits", Release: rel, StartMs: start, EndMs: start + 60_000, Windows: 1, Requests: 100,
			Scores: &pb.DriftScores{Judged: true, Alert: alert, MaxJs: 0.4, MaxPsi: 0.9, Features: []*pb.FeatureScore{{Name: "x", Js: 0.4, Psi: 0.9}}}}
	}
	send := func(seq uint64, p any) *pb.Telemetry {
		tm := &pb.Telemetry{DeviceId: "dev-d", Epoch: "e1", Sequence: seq, SentAtMs: now}
		switch p := p.(type) {
		case []*pb.WindowSummary:
			tm.Payload = &pb.Telemetry_Summaries{Summaries: &pb.Summaries{Summaries: p}}
		case []*pb.Event:
			tm.Payload = &pb.Telemetry_Events{Events: &pb.Events{Events: p}}
		}
		b, err := wire.Encode(tm)
		if err != nil {
			t.Fatal(err)
		}
		publishProto(t, dev, topic.Telemetry, b)
		return tm
	}
	rollback := &pb.Event{AtMs: now, Level: "error", Code: "model.rollback", Message: "probation failed",
		Attrs: map[string]string{"model": "digits", "release": "1"}}
	first := send(1, []*pb.WindowSummary{summary(1, now-120_000, true)})
	send(2, []*pb.WindowSummary{summary(1, now-60_000, true)})                                        // the same drift, later: left out
	send(3, []*pb.WindowSummary{summary(2, now-60_000, true), summary(1, now-180_000, false)})        // release 2 drifts too
	send(4, []*pb.Event{rollback, {AtMs: now, Level: "info", Code: "model.committed", Message: "x"}}) // one alert
	send(5, []*pb.Event{rollback})                                                                    // told again: left out
	b, _ := wire.Encode(first)
	publishProto(t, dev, topic.Telemetry, b) // a resend: a duplicate, stored before

	// The device's reported state: a model whose rollback count grows.
	report := func(rev uint64, active, rollbacks uint64) {
		b, err := wire.Encode(&pb.ReportedState{DeviceId: "dev-d", SentAtMs: time.Now().UnixMilli(), DesiredRevision: rev,
			Models: []*pb.ModelState{{Name: "other", ActiveRelease: active, Rollbacks: rollbacks, LastError: "release 3 rolled back: crashes"}}})
		if err != nil {
			t.Fatal(err)
		}
		publishProto(t, dev, topic.Reported, b)
	}
	report(1, 3, 0)
	report(1, 2, 1)
	report(1, 2, 1) // nothing new

	eventually(t, "every message taken in", func() bool {
		return metric(srv, "telemetry_stored") == 5 && metric(srv, "telemetry_duplicates") == 1 &&
			metric(srv, "alerts_deduplicated") == 2 && metric(srv, "alerts_sent") == 4
	})
	got := rc.got()
	want := map[string]bool{
		server.AlertDriftAlert + " digits 1": true, server.AlertDriftAlert + " digits 2": true,
		server.AlertDeviceRollback + " digits 1": true, server.AlertDeviceRollback + " other 3": true,
	}
	if len(got) != len(want) {
		t.Fatalf("webhook got %d alerts, want %d: %v", len(got), len(want), got)
	}
	for _, a := range got {
		l, _ := a["labels"].(map[string]any)
		k := l["alertname"].(string) + " " + l["model"].(string) + " " + l["release"].(string)
		if !want[k] || l["device"] != "dev-d" || l["severity"] != "warning" {
			t.Errorf("unexpected alert %v", a)
		}
		delete(want, k)
		if _, err := time.Parse(time.RFC3339, a["startsAt"].(string)); err != nil {
			t.Errorf("startsAt: %v", err)
		}
		if ann, _ := a["annotations"].(map[string]any); ann["summary"] == "" {
			t.Errorf("no summary: %v", a)
		}
	}
	if len(want) != 0 {
		t.Errorf("alerts not sent: %v", want)
	}
}
