package demo

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/exepages"
	"github.com/flotilla-edge/flotilla/agent/reap"
	"github.com/flotilla-edge/flotilla/promscrape"
)

// TestAgentFootprint measures the agent process (FLOTILLA_BENCH=1, not in
// CI): its resident memory idle and connected with no model, sampled over
// 3 minutes of that idleness (30 s heartbeats, the default 60 s summary
// window; FLOTILLA_BENCH_IDLE sets another duration) with its CPU time,
// then its memory with the digits model active (and the ONNX Runtime
// plugin process's beside it). FLOTILLA_BENCH_BASE_AGENT names a baseline
// agent binary (another commit's build) to run idle beside them, started
// the same way. The figures go into docs/benchmarks.md.
func TestAgentFootprint(t *testing.T) {
	if os.Getenv("FLOTILLA_BENCH") == "" {
		t.Skip("a measurement, not a test: FLOTILLA_BENCH=1 runs it")
	}
	modelDir := digitsDir(t)
	// The same agent three times, idle side by side: as shipped, and with
	// the Go runtime told to keep its heap small.
	variants := []Device{
		{ID: "fp-default", Labels: map[string]string{"ring": "canary"}},
		{ID: "fp-gogc50", Labels: map[string]string{"ring": "main"}, Env: []string{"GOGC=50"}},
		{ID: "fp-memlimit", Labels: map[string]string{"ring": "main"}, Env: []string{"GOMEMLIMIT=8MiB"}},
	}
	// A baseline agent binary (built from another commit) beside them, run
	// the same way: the before of a before/after in one run.
	if base := os.Getenv("FLOTILLA_BENCH_BASE_AGENT"); base != "" {
		variants = append(variants, Device{ID: "fp-baseline", Labels: map[string]string{"ring": "main"}, Bin: base})
	}
	cfg := Config{BinDir: os.Getenv("FLOTILLA_BENCH_BIN"), WorkDir: filepath.Join(t.TempDir(), "fp"), ModelDir: modelDir,
		ORTLib: ortLib(t), Devices: variants,
		Window: time.Minute, Heartbeat: 30 * time.Second, RolloutEvery: time.Second, Probation: 2 * time.Second,
		MinRequests: 1, Out: os.Stderr}
	if cfg.BinDir == "" {
		cfg.BinDir = buildBinaries(t)
	}
	cfg.defaults()
	ctx := context.Background()
	d := &Demo{cfg: cfg}
	defer d.Close()
	for _, step := range []func(context.Context) error{d.prepare, d.makeKeys, d.startServer, d.releaseBundle, d.startAgents} {
		if err := step(ctx); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(10 * time.Second)
	var cpu0 []int
	for i, v := range variants {
		pid := d.agents[i].cmd.Process.Pid
		cpu0 = append(cpu0, cpuTicks(t, pid))
		exeBreakdown(t, v.ID+" 10 s after start", pid) // before the scrape, which touches code of its own
		report(t, ctx, v.ID+" connected, no model, 10 s after start", pid, d.MetricsURLs()[i])
	}
	// Samples every 10 s over the idle time (FLOTILLA_BENCH_IDLE, default 3
	// minutes: the agent releases its binary's start-up pages 90 s after
	// start, then every 5 minutes; summary windows of a minute, heartbeats
	// every 30 s).
	idle := 3 * time.Minute
	if v, err := time.ParseDuration(os.Getenv("FLOTILLA_BENCH_IDLE")); err == nil && v >= 10*time.Second {
		idle = v
	}
	samples := make([][]float64, len(variants))
	for range int(idle / (10 * time.Second)) {
		time.Sleep(10 * time.Second)
		for i := range variants {
			samples[i] = append(samples[i], procStatus(t, d.agents[i].cmd.Process.Pid)["VmRSS"]/1024)
		}
	}
	for i, v := range variants {
		pid := d.agents[i].cmd.Process.Pid
		cpu := float64(cpuTicks(t, pid)-cpu0[i]) / 100 // USER_HZ
		fmt.Printf("| %s CPU over %v idle | %.2f s (%.2f %% of one core) |\n", v.ID, idle, cpu, cpu/idle.Seconds()*100)
		fmt.Printf("| %s RSS sampled every 10 s over the %v idle | %s MB |\n", v.ID, idle, joinMB(samples[i]))
		exeBreakdown(t, fmt.Sprintf("%s no model, after %v idle", v.ID, idle), pid)
		report(t, ctx, fmt.Sprintf("%s no model, after %v idle", v.ID, idle), pid, d.MetricsURLs()[i])
	}

	// Only the agent as shipped (ring=canary) takes the model.
	spec := strings.Replace(d.RolloutSpec(), "selector: {labels: {fleet: demo}}", "selector: {labels: {ring: canary}}", 1)
	v, err := d.Client.CreateRollout(ctx, []byte(spec))
	if err != nil {
		t.Fatal(err)
	}
	d.RolloutID = v.ID
	// The canary stage assigns the first device; probation judges requests,
	// so a trickle of traffic goes to it until it commits.
	canary := -1
	eventually(t, "the canary assigned", time.Minute, func() bool {
		v, err := d.Client.Rollout(ctx, d.RolloutID, true)
		if err != nil || len(v.DeviceStates) == 0 {
			return false
		}
		for i, dev := range cfg.Devices {
			if dev.ID == v.DeviceStates[0].Device {
				canary = i
			}
		}
		return canary >= 0
	})
	var shifted atomic.Bool
	var counts Counts
	one := &Demo{cfg: cfg, inferURLs: d.inferURLs[canary : canary+1], rows: d.rows}
	one.cfg.RatePerDevice = 5
	tctx, stopTraffic := context.WithCancel(ctx)
	trafficDone := make(chan struct{})
	go func() { defer close(trafficDone); one.Traffic(tctx, &shifted, &counts) }()
	eventually(t, "digits committed on the device", 2*time.Minute, func() bool {
		f, err := promscrape.Get(ctx, http.DefaultClient, d.MetricsURLs()[canary])
		if err != nil {
			return false
		}
		rel, _ := f.Value("flotilla_agent_model_active_release", "model", "digits")
		prob, _ := f.Value("flotilla_agent_model_probation", "model", "digits")
		return rel == 1 && prob == 0
	})
	stopTraffic()
	<-trafficDone
	time.Sleep(10 * time.Second)
	fmt.Printf("| (after %d inferences) | |\n", counts.OK.Load())
	id := cfg.Devices[canary].ID
	exeBreakdown(t, id+" digits active", d.agents[canary].cmd.Process.Pid)
	report(t, ctx, id+" digits active", d.agents[canary].cmd.Process.Pid, d.MetricsURLs()[canary])
	pids, _ := reap.Find(reap.Marker(filepath.Join(cfg.WorkDir, "devices", id)))
	for _, p := range pids {
		report(t, ctx, "ONNX Runtime plugin, digits loaded", p, "")
	}
}

// report prints a process's resident memory (anonymous and file-backed)
// and, from its /metrics page, the Go heap in use and what the runtime
// holds from the OS.
func report(t *testing.T, ctx context.Context, what string, pid int, metrics string) {
	t.Helper()
	st := procStatus(t, pid)
	line := fmt.Sprintf("| %s | RSS %.1f MB (anon %.1f, file %.1f)", what, st["VmRSS"]/1024, st["RssAnon"]/1024, st["RssFile"]/1024)
	if metrics != "" {
		if f, err := promscrape.Get(ctx, http.DefaultClient, metrics); err == nil {
			heap, _ := f.Value("go_memstats_heap_inuse_bytes")
			sys, _ := f.Value("go_memstats_sys_bytes")
			stack, _ := f.Value("go_memstats_stack_inuse_bytes")
			g, _ := f.Value("go_goroutines")
			line += fmt.Sprintf("; Go heap in use %.1f MB, stacks %.1f MB, from the OS %.1f MB, %0.f goroutines", heap/1e6/1.048576, stack/1e6/1.048576, sys/1e6/1.048576, g)
		}
	}
	fmt.Println(line + " |")
}

// joinMB lists figures in MB.
func joinMB(fs []float64) string {
	var ss []string
	for _, f := range fs {
		ss = append(ss, fmt.Sprintf("%.1f", f))
	}
	return strings.Join(ss, ", ")
}

// exeBreakdown prints, from /proc/PID/smaps, what of the process's own
// executable is resident (text, read-only data with the pclntab, writable
// data) and its anonymous memory.
func exeBreakdown(t *testing.T, what string, pid int) {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := exepages.ParseSmaps(f)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		t.Fatal(err)
	}
	kb := map[string]int64{}
	for _, m := range maps {
		switch {
		case m.Path == exe:
			kb[m.Perms] += m.RssKB
		case m.Inode == 0:
			kb["anon"] += m.RssKB
		default:
			kb["other files"] += m.RssKB
		}
	}
	fmt.Printf("| %s, smaps | binary text (r-xp) %.1f MB, read-only data (r--p) %.1f MB, data (rw-p) %.1f MB; anonymous %.1f MB; other files %.1f MB |\n",
		what, float64(kb["r-xp"])/1024, float64(kb["r--p"])/1024, float64(kb["rw-p"])/1024, float64(kb["anon"])/1024, float64(kb["other files"])/1024)
}

// procStatus reads a process's memory lines from /proc/PID/status, in KiB.
func procStatus(t *testing.T, pid int) map[string]float64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if fs := strings.Fields(v); ok && len(fs) == 2 && fs[1] == "kB" {
			n, _ := strconv.ParseFloat(fs[0], 64)
			out[k] = n
		}
	}
	return out
}

// cpuTicks is a process's user+system time in clock ticks.
func cpuTicks(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	// After the command: state is field 3; utime 14 and stime 15.
	u, _ := strconv.Atoi(f[11])
	st, _ := strconv.Atoi(f[12])
	return u + st
}
