package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/reap"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/promscrape"
)

// need returns path when it exists; missing, it fails the test under CI
// and skips it elsewhere.
func need(t *testing.T, what, path string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found at %q: %v", what, path, err)
		}
		t.Skipf("%s not found at %q", what, path)
	}
	return path
}

// digitsDir is $FLOTILLA_MODELS/digits or ../shared/models/digits beside
// the repository (as the other tests of the shared models find them).
func digitsDir(t *testing.T) string {
	t.Helper()
	base := os.Getenv("FLOTILLA_MODELS")
	if base == "" {
		base = filepath.Join("..", "..", "shared", "models")
	}
	return need(t, "the shared digits model", filepath.Join(base, "digits"))
}

func ortLib(t *testing.T) string {
	lib := os.Getenv("FLOTILLA_ORT_LIB")
	if lib == "" {
		cache, _ := os.UserCacheDir()
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
		lib = filepath.Join(cache, "flotilla", "onnxruntime", "1.30.0", "linux-"+arch, "libonnxruntime.so.1")
	}
	return need(t, "libonnxruntime (make deps)", lib)
}

// buildBinaries builds the real server, agent and ONNX plugin.
func buildBinaries(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, c := range []string{"flotilla-server", "flotilla-agent", "flotilla-runtime-onnx"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, c), "../cmd/"+c)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", c, err, out)
		}
	}
	return dir
}

func eventually(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestDemoShort runs the demo's scenario in short form with the real
// processes: server, three agents with different labels, the digits
// bundle built with its baseline from the training split and released,
// the staged rollout. With test-split traffic the rollout completes on
// every device and the drift report over that traffic is judged and not
// alerting; with the traffic shifted the report over the shifted windows
// alerts. Every agent's /metrics and the server's show the model served
// and the rollout completed. Close stops every process cleanly: each
// exits 0 and no runtime plugin is left.
func TestDemoShort(t *testing.T) {
	modelDir := digitsDir(t)
	lib := ortLib(t)
	bin := buildBinaries(t)
	var log strings.Builder
	cfg := Config{BinDir: bin, WorkDir: filepath.Join(t.TempDir(), "demo"), ModelDir: modelDir, ORTLib: lib,
		Devices: []Device{
			{ID: "t-canary", Labels: map[string]string{"ring": "canary", "site": "a"}},
			{ID: "t-main-1", Labels: map[string]string{"ring": "main", "site": "a"}},
			{ID: "t-main-2", Labels: map[string]string{"ring": "main", "site": "b"}},
		},
		Window: time.Second, Heartbeat: 5 * time.Second, RolloutEvery: 200 * time.Millisecond,
		Probation: 2 * time.Second, MinRequests: 20, RatePerDevice: 40, Out: &log}
	ctx := context.Background()
	d, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			d.Close()
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", log.String())
			for _, p := range append(append([]*proc{}, d.agents...), d.server) {
				b, _ := os.ReadFile(d.logPath(p.name))
				t.Logf("%s log (tail):\n%s", p.name, tail(string(b), 3000))
			}
		}
	})
	if h := d.Howto(); !strings.Contains(h, "Console: "+d.APIURL+"/ (user demo, password "+d.ConsolePassword) || !strings.Contains(h, "rollout watch "+d.RolloutID) {
		t.Errorf("howto lacks the console URL and login or the watch command:\n%s", h)
	}
	if us, err := d.Client.ListUsers(ctx); err != nil || len(us) != 1 || us[0].Name != "demo" || us[0].Role != "operator" {
		t.Errorf("console users %+v, %v; want the demo operator", us, err)
	}

	var shifted atomic.Bool
	var counts Counts
	tctx, stopTraffic := context.WithCancel(ctx)
	trafficDone := make(chan struct{})
	go func() { defer close(trafficDone); d.Traffic(tctx, &shifted, &counts) }()
	defer func() { stopTraffic(); <-trafficDone }()
	start := time.Now()

	// While it runs, the server's /metrics carries the rollout's own series.
	tlsCfg, err := pki.PinnedClientTLS(d.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	serverHC := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	eventually(t, "the running rollout's devices on the server's /metrics", 30*time.Second, func() bool {
		f, err := promscrape.Get(ctx, serverHC, d.APIURL+"/metrics")
		if err != nil {
			return false
		}
		_, staged := f.Value("flotilla_rollout_stage", "rollout", d.RolloutID, "phase", "running")
		n, _ := f.Value("flotilla_rollout_devices", "rollout", d.RolloutID)
		return staged && n >= 1
	})
	eventually(t, "the rollout completed on every device", 60*time.Second, func() bool {
		v, err := d.Rollout(ctx)
		return err == nil && v.Phase == "completed" && v.Devices["committed"] == len(cfg.Devices)
	})
	eventually(t, "a judged drift report over the test split from every device", 30*time.Second, func() bool {
		rd, ok, err := d.Drift(ctx, start)
		return err == nil && ok && rd.Judged && rd.Devices == len(cfg.Devices)
	})
	normal, _, err := d.Drift(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	if normal.Alert || !normal.Baseline || normal.Devices != len(cfg.Devices) {
		t.Fatalf("drift over the test split: state %s alert %v baseline %v devices %d max %+v",
			normal.State, normal.Alert, normal.Baseline, normal.Devices, normal.Max)
	}

	shifted.Store(true)
	// Windows that start after the shift hold only shifted rows.
	from := time.Now().Add(cfg.Window)
	var drifted bool
	eventually(t, "a judged drift report over the shifted traffic", 30*time.Second, func() bool {
		rd, ok, err := d.Drift(ctx, from)
		if err == nil && ok && rd.Judged {
			drifted = rd.Alert
			if !drifted {
				t.Logf("shifted traffic judged without alert: %s %+v", rd.State, rd.Max)
			}
			return true
		}
		return false
	})
	if !drifted {
		t.Fatal("the shifted traffic raised no drift alert")
	}
	if counts.OK.Load() == 0 || counts.Failed.Load() != 0 {
		t.Errorf("inferences ok %d, failed %d", counts.OK.Load(), counts.Failed.Load())
	}

	// The metrics pages: every agent serves release 1, committed, with
	// inference latencies; the server counts the rollout completed.
	for i, u := range d.MetricsURLs() {
		f, err := promscrape.Get(ctx, http.DefaultClient, u)
		if err != nil {
			t.Fatal(err)
		}
		id := cfg.Devices[i].ID
		if v, _ := f.Value("flotilla_agent_model_active_release", "model", "digits"); v != 1 {
			t.Errorf("%s: active release %v", id, v)
		}
		if v, _ := f.Value("flotilla_agent_model_probation", "model", "digits"); v != 0 {
			t.Errorf("%s: still on probation", id)
		}
		if v, _ := f.Value("flotilla_agent_inference_duration_seconds", "model", "digits"); v == 0 {
			t.Errorf("%s: no inference latencies", id)
		}
		if v, _ := f.Value("flotilla_agent_summaries_total", "outcome", "acked"); v == 0 {
			t.Errorf("%s: no summaries acknowledged", id)
		}
	}
	f, err := promscrape.Get(ctx, serverHC, d.APIURL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := f.Value("flotilla_rollouts", "phase", "completed"); v != 1 {
		t.Errorf("server: completed rollouts %v", v)
	}
	if _, ok := f.Value("flotilla_rollout_stage", "rollout", d.RolloutID); ok {
		t.Error("server: a completed rollout still has per-rollout series")
	}
	if v, _ := f.Value("flotilla_devices_online"); v != float64(len(cfg.Devices)) {
		t.Errorf("server: devices online %v", v)
	}

	stopTraffic()
	<-trafficDone
	d.Close()
	closed = true
	for _, p := range append(append([]*proc{}, d.agents...), d.server) {
		select {
		case <-p.done:
		default:
			t.Errorf("%s still running after Close", p.name)
			continue
		}
		if p.err != nil {
			t.Errorf("%s exited with %v", p.name, p.err)
		}
	}
	for _, dev := range cfg.Devices {
		if pids, _ := reap.Find(reap.Marker(filepath.Join(cfg.WorkDir, "devices", dev.ID))); len(pids) != 0 {
			t.Errorf("%s left runtime plugins running: %v", dev.ID, pids)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprintf("…%s", s[len(s)-n:])
}
