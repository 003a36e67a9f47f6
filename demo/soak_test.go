package demo

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/sim"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/promscrape"
)

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestSoakSimFleet (make soak; FLOTILLA_SOAK=1, never in CI): a
// flotilla-server process on its embedded defaults and FLOTILLA_SOAK_AGENTS
// simulated agents (agent/sim: real enrolment, MQTT sessions, heartbeats
// every 60 s, a summary a minute each from 6 synthetic inferences through
// the real buffer and outbox) started at 500/s in this process; once all
// are online, a staged rollout of the digits bundle to 20 % of them (they
// download, verify and stage it); then FLOTILLA_SOAK_MINUTES of operators'
// API reads. Every 30 s it prints the server's RSS and goroutines, devices
// online, MQTT clients, the telemetry ingest's backlog and messages
// stored, the rollout's devices by phase, the API's p99 from the server's
// /metrics, and this process's open files per agent and goroutines.
func TestSoakSimFleet(t *testing.T) {
	if os.Getenv("FLOTILLA_SOAK") == "" {
		t.Skip("a soak run: FLOTILLA_SOAK=1 (make soak) runs it")
	}
	n := envInt("FLOTILLA_SOAK_AGENTS", 5000)
	minutes := envInt("FLOTILLA_SOAK_MINUTES", 10)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	bin := os.Getenv("FLOTILLA_BENCH_BIN")
	if bin == "" {
		bin = buildBinaries(t)
	}
	cfg := Config{BinDir: bin, WorkDir: filepath.Join(t.TempDir(), "soak"), Heartbeat: time.Minute, Out: os.Stderr,
		ModelDir: digitsDir(t)}
	cfg.defaults()
	d := &Demo{cfg: cfg}
	defer d.Close()
	ctx := context.Background()
	for _, step := range []func(context.Context) error{d.prepare, d.makeKeys, d.startServer, d.releaseBundle} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := d.Client.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "soak", MaxUses: n, TTL: "2h"})
	if err != nil {
		t.Fatal(err)
	}
	online := make(chan time.Duration, 1)
	fl, err := sim.New(sim.Options{N: n, ServerURL: d.APIURL, EnrolToken: tok.Token, CAFingerprint: d.Fingerprint,
		DataDir: filepath.Join(cfg.WorkDir, "sim"), IDPrefix: "soak", HeartbeatInterval: time.Minute,
		Labels: map[string]string{"fleet": "soak"}, Online: func(d time.Duration) { online <- d }})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(ctx)
	simDone := make(chan error, 1)
	start := time.Now()
	go func() { simDone <- fl.Run(simCtx) }()
	defer func() { stopSim(); <-simDone }()

	tlsCfg, err := pki.PinnedClientTLS(d.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	sample := func(phase string) {
		f, err := promscrape.Get(ctx, hc, d.APIURL+"/metrics")
		if err != nil {
			t.Logf("scrape: %v", err)
			return
		}
		rss, _ := f.Value("process_resident_memory_bytes")
		gor, _ := f.Value("go_goroutines")
		backlog, _ := f.Value("flotilla_telemetry_ingest_backlog")
		stored, _ := f.Value("flotilla_telemetry_messages_total", "outcome", "stored")
		rollout := "-"
		if d.RolloutID != "" {
			if v, err := d.Rollout(ctx); err == nil {
				rollout = fmt.Sprintf("%s %v", v.Phase, v.Devices)
			}
		}
		// Sim agents that downloaded, verified and staged the bundle.
		staged, _ := filepath.Glob(filepath.Join(cfg.WorkDir, "sim", "*", "bundles", "staged.json"))
		on, _ := f.Value("flotilla_devices_online")
		mq, _ := f.Value("flotilla_mqtt_clients")
		// p99 by route since the start (the histograms are cumulative):
		// enrolment happens in the ramp, the reads only after it.
		p99 := func(route string) string {
			q, ok := f.Quantile("flotilla_api_request_duration_seconds", 0.99, "route", route)
			c, _ := f.Value("flotilla_api_request_duration_seconds", "route", route)
			if !ok {
				return "-"
			}
			return fmt.Sprintf("%.1f ms (%.0f)", q*1000, c)
		}
		fds, _ := os.ReadDir("/proc/self/fd")
		fmt.Printf("| %s | t+%.0fs | %.0f MB | %.0f | %.0f | %.0f | %.0f | %.0f | %s | %d | %s | %s | %s | %d (%.2f per agent) | %d | %s |\n",
			phase, time.Since(start).Seconds(), rss/1048576, gor, on, mq, backlog, stored, rollout, len(staged), p99("/v1/enrol"), p99("/v1/devices"),
			p99("/v1/devices/{id}"), len(fds), float64(len(fds))/float64(n), runtime.NumGoroutine(), selfRSS())
	}
	fmt.Println("| phase | time | server RSS | server goroutines | online | MQTT clients | ingest backlog | telemetry stored | rollout | sim staged | p99 POST /v1/enrol (count) | p99 GET /v1/devices (count) | p99 GET /v1/devices/{id} (count) | sim open files | sim goroutines | sim RSS |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	ticker := time.NewTicker(10 * time.Second)
	defer ticker.Stop()
wait:
	for {
		select {
		case <-online:
			break wait
		case err := <-simDone:
			t.Fatalf("sim stopped: %v", err)
		case <-ticker.C:
			sample("ramp")
			v, _ := promscrape.Get(ctx, hc, d.APIURL+"/metrics")
			if on, _ := v.Value("flotilla_devices_online"); int(on) >= n {
				break wait
			}
			if time.Since(start) > 10*time.Minute {
				t.Fatalf("not all %d online after 10 minutes", n)
			}
		}
	}
	fmt.Printf("| all %d online | t+%.0fs | | | | | | | | | | | | | | |\n", n, time.Since(start).Seconds())

	// One rollout running: a wave of 20 % of the fleet downloads and
	// stages the digits bundle; the stage bakes past the run's end.
	spec := []byte(`name: digits to a fifth of the soak fleet
bundle: {model: digits, release: 1}
selector: {labels: {fleet: soak}}
stages:
  - {name: wave, percent: 20, bake: 2h}
  - {name: everyone, percent: 100}
gates:
  window: 2m
  error_rate: {max: 0.05}
failure_policy: pause
`)
	// Right after thousands of births the server may be slow to answer:
	// a create that timed out may still have been made, so look first.
	for try := 0; d.RolloutID == ""; try++ {
		if rs, err := d.Client.ListRollouts(ctx, "digits", "", 10); err == nil && len(rs) > 0 {
			d.RolloutID = rs[0].ID
			break
		}
		v, err := d.Client.CreateRollout(ctx, spec)
		if err == nil {
			d.RolloutID = v.ID
			break
		}
		if try == 5 {
			t.Fatalf("rollout create: %v", err)
		}
		t.Logf("rollout create: %v; again in 10 s", err)
		time.Sleep(10 * time.Second)
	}

	// Operators' reads while the fleet heartbeats: a page of devices and
	// one device, twice a second.
	end := time.Now().Add(time.Duration(minutes) * time.Minute)
	next := time.Now().Add(30 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		if _, err := d.Client.ListDevices(ctx, apiclient.ListOptions{Limit: 100}); err != nil {
			t.Errorf("list devices: %v", err)
		}
		if _, err := d.Client.Device(ctx, fmt.Sprintf("soak-%04d", i%n)); err != nil {
			t.Errorf("device: %v", err)
		}
		if time.Now().After(next) {
			sample("steady")
			next = next.Add(30 * time.Second)
		}
		time.Sleep(500 * time.Millisecond)
	}
	sample("end")
}

// selfRSS is this process's resident memory, from /proc/self/status.
func selfRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "-"
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				return "-"
			}
			return fmt.Sprintf("%d MB", kb/1024)
		}
	}
	return "-"
}
