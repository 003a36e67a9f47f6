package sim

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/promscrape"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func TestRunAllOnline(t *testing.T) {
	srv := agenttest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	online := make(chan time.Duration, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			N: 5, ServerURL: srv.URL(), EnrolToken: srv.Token(), CAFingerprint: srv.CAFingerprint(),
			DataDir: t.TempDir(), IDPrefix: "t", Labels: map[string]string{"sim": "yes"},
			Online: func(d time.Duration) { online <- d },
		})
	}()
	select {
	case <-online:
	case err := <-done:
		t.Fatalf("Run = %v before all were online", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not all devices came online")
	}
	for i := range 5 {
		b := agenttest.WaitFor[flotillapb.Birth](srv, 0, fmt.Sprintf("t-%04d", i), topic.Birth, nil)
		if b.GetLabels()["sim"] != "yes" {
			t.Errorf("birth = %v", b)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	for i := range 5 {
		if st := srv.RetainedStatus(fmt.Sprintf("t-%04d", i)); st.GetReason() != "shutdown" {
			t.Errorf("device %d status = %v", i, st)
		}
	}
}

func TestRunStopsOnRefusal(t *testing.T) {
	srv := agenttest.New(t)
	err := Run(context.Background(), Options{
		N: 2, ServerURL: srv.URL(), EnrolToken: "wrong", CAFingerprint: srv.CAFingerprint(), DataDir: t.TempDir(),
	})
	if err == nil {
		t.Fatal("Run = nil with a bad token")
	}
}

// TestRampAndMetrics: agents start at the ramp's pace (with one every 5 s,
// stopping once the first is connected leaves the others never started:
// one enrolment), and the fleet's handler serves the devices by state and
// each agent's own registry.
func TestRampAndMetrics(t *testing.T) {
	srv := agenttest.New(t)
	fl, err := New(Options{N: 3, ServerURL: srv.URL(), EnrolToken: srv.Token(), CAFingerprint: srv.CAFingerprint(),
		DataDir: t.TempDir(), IDPrefix: "r", RampPerSecond: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fl.Handler())
	defer hs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := promscrape.Get(ctx, http.DefaultClient, hs.URL+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := f.Value("flotilla_sim_devices", "state", "connected"); v == 1 {
			if s, _ := f.Value("flotilla_sim_devices", "state", "stopped"); s != 2 {
				t.Fatalf("stopped devices %v, want 2 not yet started", s)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the first device never connected")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f, err := promscrape.Get(ctx, http.DefaultClient, hs.URL+"/devices/r-0000/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Value("flotilla_agent_connection_state", "state", "connected"); v != 1 {
		t.Fatalf("r-0000 page: connected = %v", v)
	}
	resp, err := http.Get(hs.URL + "/devices/nope/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown device: %s", resp.Status)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := srv.Enrolments(); n != 1 {
		t.Fatalf("%d enrolments, want 1: the ramp started agents early", n)
	}
}

// TestSummariesSentAndAcked: each agent's synthetic inferences go through
// its real (in-memory) metrics buffer: a window's summary of sim-model is
// published on the device's telemetry topic, the control plane's ack
// removes it from the outbox (the agent's own registry counts it acked),
// and no agent left a database file in its data folder.
func TestSummariesSentAndAcked(t *testing.T) {
	srv := agenttest.New(t)
	dir := t.TempDir()
	fl, err := New(Options{N: 2, ServerURL: srv.URL(), EnrolToken: srv.Token(), CAFingerprint: srv.CAFingerprint(),
		DataDir: dir, IDPrefix: "s", RecordsPerMinute: 600, Window: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(fl.Handler())
	defer hs.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- fl.Run(ctx) }()
	for _, id := range []string{"s-0000", "s-0001"} {
		tm := agenttest.WaitFor[flotillapb.Telemetry](srv, 0, id, topic.Telemetry, func(m *flotillapb.Telemetry) bool {
			ss := m.GetSummaries().GetSummaries()
			return len(ss) > 0 && ss[0].GetModel() == SimModel && ss[0].GetRequests() > 0
		})
		if tm.GetDeviceId() != id {
			t.Fatalf("telemetry of %s says device %q", id, tm.GetDeviceId())
		}
		ack, err := wire.Encode(&flotillapb.Ack{DeviceId: id, Epoch: tm.GetEpoch(), Sequences: []uint64{tm.GetSequence()}})
		if err != nil {
			t.Fatal(err)
		}
		srv.Publish(srv.Scheme().Device(topic.Ack, id), ack, false)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := promscrape.Get(ctx, http.DefaultClient, hs.URL+"/devices/s-0000/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if v, _ := f.Value("flotilla_agent_summaries_total", "outcome", "acked"); v >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the ack never removed a summary")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"s-0000", "s-0001"} {
		for _, name := range []string{"agent.db", "metrics.db"} {
			if _, err := os.Stat(filepath.Join(dir, id, name)); !os.IsNotExist(err) {
				t.Errorf("%s/%s: %v, want no file", id, name, err)
			}
		}
	}
}
