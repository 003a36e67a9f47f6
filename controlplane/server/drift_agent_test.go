package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"expvar"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// gateDialer is the agent's real paho dialer with a switch: down cuts the
// live connection (as a lost link: OnLost fires) and refuses to dial
// until up.
type gateDialer struct {
	mu   sync.Mutex
	down bool
	conn agent.Conn
	lost func(error)
}

func (g *gateDialer) Dial(ctx context.Context, o agent.DialOptions) (agent.Conn, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return nil, errors.New("link down (test)")
	}
	c, err := agent.PahoDialer{}.Dial(ctx, o)
	if err == nil {
		g.conn, g.lost = c, o.OnLost
	}
	return c, err
}

func (g *gateDialer) setDown(down bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.down = down
	if down && g.conn != nil {
		g.conn.Disconnect()
		g.lost(errors.New("link cut (test)"))
		g.conn = nil
	}
}

// inferRow posts one digits row to the agent's local API.
func inferRow(t *testing.T, base string, row []float64) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{
		"name": "pixels", "datatype": "FP32", "shape": []int{1, 64}, "data": row}}})
	resp, err := http.Post(base+"/v2/models/digits/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
		t.Fatalf("infer: %d %s", resp.StatusCode, b)
	}
}

// TestAgentDriftEndToEnd: a real agent serving the digits model records
// every inference through its local API, summarises it in 1 s windows
// against the bundle's drift baseline and sends the summaries; the
// control plane's GET /v1/drift for the device counts each request once,
// with the monitored pixels' statistics and the predicted class. Inferences
// served while the link is down are summarised offline and arrive after
// the reconnect, counted exactly once.
func TestAgentDriftEndToEnd(t *testing.T) {
	ortLib(t) // skip early when ONNX Runtime is missing (outside CI)
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 4*wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	client := adminClient(t, srv, dir)
	et, err := client.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "drift", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}

	gate := &gateDialer{}
	dataDir := filepath.Join(t.TempDir(), "dev-d")
	a, err := agent.New(agent.Config{DataDir: dataDir, DeviceID: "dev-d", ServerURL: srv.APIURL(), EnrolToken: et.Token,
		CAFingerprint: srv.CAFingerprint(), MQTTURL: srv.MQTTURL(), HeartbeatInterval: time.Second, Version: "drift-test",
		Logger: testLogger(t), Metrics: new(expvar.Map).Init(), Dialer: gate,
		Telemetry: agent.TelemetryConfig{Window: time.Second, CheckInterval: 100 * time.Millisecond, AckTimeout: 2 * time.Second},
		Models: &agent.ModelsConfig{PluginDir: onnxPluginDir(t), ORTLib: ortLib(t), InferAddr: "127.0.0.1:0",
			Lifecycle: lifecycle.Config{CheckInterval: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	actx, acancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(actx); err != nil {
			t.Errorf("agent run: %v", err)
		}
	}()
	t.Cleanup(func() { acancel(); <-done })
	eventually(t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
	op.run("devices", "assign", "dev-d", "digits", "1")
	eventually(t, "release 1 active", func() bool {
		m := reportedDigits(srv, "dev-d")
		return m != nil && m.GetActiveRelease() == 1
	})
	base := "http://" + a.InferAddr()

	pixels, _ := digitsRows(t)
	const online = 12
	var sent [][]float64
	for i := range online {
		row := pixels[i%len(pixels)]
		inferRow(t, base, row)
		sent = append(sent, row)
	}
	report := func() api.ReleaseDrift {
		r, err := client.Drift(ctx, apiclient.DriftOptions{Model: "digits", Device: "dev-d", Since: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Releases) != 1 {
			return api.ReleaseDrift{}
		}
		return r.Releases[0]
	}
	eventually(t, "the online inferences in the drift report", func() bool { return report().Requests == online })
	check := func(rd api.ReleaseDrift, rows [][]float64) {
		t.Helper()
		if rd.Release != 1 || rd.Errors != 0 || !rd.Baseline || len(rd.Features) != 64 || rd.Prediction == nil ||
			rd.Prediction.Count != uint64(len(rows)) || rd.LatencyMs == nil {
			t.Fatalf("drift report: %+v", rd)
		}
		for k, f := range rd.Features {
			var sum float64
			lo, hi := math.Inf(1), math.Inf(-1)
			for _, r := range rows {
				sum += r[k]
				lo, hi = min(lo, r[k]), max(hi, r[k])
			}
			if f.Count != uint64(len(rows)) || math.Abs(f.Mean-sum/float64(len(rows))) > 1e-6 || f.Min != lo || f.Max != hi {
				t.Fatalf("feature %d (%s): count %d mean %g min %g max %g; sent %d rows, mean %g min %g max %g",
					k, f.Name, f.Count, f.Mean, f.Min, f.Max, len(rows), sum/float64(len(rows)), lo, hi)
			}
		}
	}
	check(report(), sent)

	// Offline: inferences go on, windows close, summaries wait.
	gate.setDown(true)
	eventually(t, "agent offline", func() bool { return a.Status().State != agent.StateConnected })
	const offline = 7
	for i := range offline {
		row := pixels[(online+i)%len(pixels)]
		inferRow(t, base, row)
		sent = append(sent, row)
	}
	time.Sleep(2500 * time.Millisecond) // two windows close while offline
	if got := report().Requests; got != online {
		t.Fatalf("requests while offline: %d, want %d", got, online)
	}
	gate.setDown(false)
	eventually(t, "the offline backlog in the drift report", func() bool { return report().Requests == online+offline })
	// Past the ack timeout a resend would show up if it were counted twice.
	time.Sleep(3 * time.Second)
	rd := report()
	if rd.Requests != online+offline {
		t.Fatalf("requests after the drain: %d, want %d", rd.Requests, online+offline)
	}
	check(rd, sent)
}
