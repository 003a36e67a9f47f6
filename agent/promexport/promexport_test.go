package promexport

import (
	"context"
	"math"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/modelstats"
	"github.com/flotilla-edge/flotilla/promscrape"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startAgent runs a real agent, with models on (no plugin, no model)
// against the agent test server's real broker.
func startAgent(t *testing.T, srv *agenttest.Server, id string) *agent.Agent {
	t.Helper()
	dir := t.TempDir()
	a, err := agent.New(agent.Config{DataDir: dir, DeviceID: id, ServerURL: srv.URL(), EnrolToken: srv.Token(),
		CAFingerprint: srv.CAFingerprint(), Facts: func() *flotillapb.Facts { return &flotillapb.Facts{Os: "linux"} },
		Models: &agent.ModelsConfig{PluginDir: filepath.Join(dir, "none"), InferAddr: "127.0.0.1:0"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// TestScrapeTwoAgentsInOneProcess: two real agents in one process, each
// with its own registry and loopback listener; each page, parsed with the
// client library's parser, names its own device, says connected, and
// carries the buffer's depth; the registries never collide.
func TestScrapeTwoAgentsInOneProcess(t *testing.T) {
	srv := agenttest.New(t)
	ctx := context.Background()
	for _, id := range []string{"pe-1", "pe-2"} {
		a := startAgent(t, srv, id)
		eventually(t, id+" connected", func() bool { return a.Status().State == agent.StateConnected })
		reg := NewRegistry(a)
		if id == "pe-1" {
			// What flotilla-agent adds for its one agent.
			reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
		}
		s, err := Listen("127.0.0.1:0", reg, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		f, err := promscrape.Get(ctx, http.DefaultClient, "http://"+s.Addr().String()+"/metrics")
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Labels("flotilla_agent_info", "device"); len(got) != 1 || got[0] != id {
			t.Fatalf("%s: device label %v", id, got)
		}
		for st, want := range map[string]float64{"connected": 1, "connecting": 0, "stopped": 0} {
			if v, ok := f.Value("flotilla_agent_connection_state", "state", st); !ok || v != want {
				t.Fatalf("%s: state %s = %v, %v", id, st, v, ok)
			}
		}
		if v, _ := f.Value("flotilla_agent_events_total", "event", agent.CounterConnects); v != 1 {
			t.Fatalf("%s: connects = %v", id, v)
		}
		for _, name := range []string{"flotilla_agent_buffer_up", "flotilla_agent_buffer_records", "flotilla_agent_outbox_messages"} {
			if _, ok := f.Value(name); !ok {
				t.Fatalf("%s: no %s", id, name)
			}
		}
		if v, _ := f.Value("flotilla_agent_buffer_up"); v != 1 {
			t.Fatalf("%s: buffer depth unreadable", id)
		}
		_, hasProcess := f.Value("process_resident_memory_bytes")
		if hasProcess != (id == "pe-1") {
			t.Fatalf("%s: process collector present = %v", id, hasProcess)
		}
	}
}

// TestListenRefusesNonLoopback: the page has no authentication.
func TestListenRefusesNonLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":9580", "192.0.2.1:9580", "example.com:80", "nonsense"} {
		if s, err := Listen(addr, prometheus.NewRegistry(), nil); err == nil {
			s.Close()
			t.Fatalf("listened on %q", addr)
		}
	}
}

// TestHistogramRebucketing: latencies recorded in modelstats' fine
// buckets come out as cumulative doubling buckets with every sample
// counted, and a sum within 5% of the true one.
func TestHistogramRebucketing(t *testing.T) {
	var h modelstats.Histogram
	lat := []time.Duration{3 * time.Microsecond, 700 * time.Microsecond, 2 * time.Millisecond,
		2 * time.Millisecond, 45 * time.Millisecond, time.Minute}
	var trueSum float64
	for _, d := range lat {
		h.Observe(d)
		trueSum += d.Seconds()
	}
	p := histogram(h.Snapshot())
	if p.count != uint64(len(lat)) {
		t.Fatalf("count %d", p.count)
	}
	if math.Abs(p.sum-trueSum)/trueSum > 0.05 {
		t.Fatalf("sum %v, true %v", p.sum, trueSum)
	}
	// Cumulative and monotone; the minute is only in +Inf.
	prevLe, prevN := 0.0, uint64(0)
	for le := 1e-6; le < 20; le *= 2 {
		n, ok := p.buckets[closest(p.buckets, le)]
		if !ok || n < prevN {
			t.Fatalf("bucket %v: %d after %d at %v", le, n, prevN, prevLe)
		}
		prevLe, prevN = le, n
	}
	if prevN != uint64(len(lat)-1) {
		t.Fatalf("highest finite bucket holds %d, want %d", prevN, len(lat)-1)
	}
	if n := p.buckets[closest(p.buckets, 2.048e-3)]; n != 4 {
		// 3 µs, 700 µs and both 2 ms are ≤ 2.048 ms.
		t.Fatalf("≤ 2.048 ms: %d", n)
	}
}

func closest(m map[float64]uint64, x float64) float64 {
	best := math.Inf(1)
	var key float64
	for k := range m {
		if d := math.Abs(math.Log(k / x)); d < best {
			best, key = d, k
		}
	}
	return key
}
