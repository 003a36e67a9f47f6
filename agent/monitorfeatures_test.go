package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn/monitortest"
)

var (
	monitorGuestsOnce sync.Once
	monitorGuests     map[string]string
	monitorCache      string
	monitorGuestsErr  error
)

// monitorGuest builds the example monitor functions once (digitsmon,
// badmon), compiled ahead into monitorCache.
func monitorGuest(t testing.TB, name string) string {
	t.Helper()
	monitorGuestsOnce.Do(func() {
		dir := filepath.Join(buildDir, "monitor-guests")
		monitorCache = filepath.Join(dir, "cache")
		monitorGuests, monitorGuestsErr = monitortest.Prepare(dir, monitorCache, "digitsmon", "badmon")
	})
	if monitorGuestsErr != nil {
		t.Fatal(monitorGuestsErr)
	}
	return monitorGuests[name]
}

type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// digitsMonitorBundle makes the digits bundle folder with the digits
// monitor function instead of per-pixel features, and builds it with
// `flotctl bundle build -baseline` over the training split: the baseline's
// features are the function's results. It returns the folder and the
// stored manifest.
func digitsMonitorBundle(t *testing.T) (string, *pb.BundleManifest, string) {
	t.Helper()
	src := "../controlplane/bundle/testdata/digits"
	dir := filepath.Join(t.TempDir(), "digits")
	for _, f := range []string{"model.onnx", "labels.txt", "golden/pixels.json", "golden/probabilities.json"} {
		copyFile(t, filepath.Join(src, f), filepath.Join(dir, f), 0o644)
	}
	copyFile(t, monitorGuest(t, "digitsmon"), filepath.Join(dir, "monitor.wasm"), 0o644)
	cfg, err := os.ReadFile(filepath.Join(src, "bundle.toml"))
	if err != nil {
		t.Fatal(err)
	}
	// The per-pixel drift section gives way to the monitor function.
	toml, _, _ := strings.Cut(string(cfg), "[drift]")
	toml += "[monitor]\nfile = \"monitor.wasm\"\nexport = \"features\"\n"
	if err := os.WriteFile(filepath.Join(dir, "bundle.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(t.TempDir(), "store")
	var stdout, stderr bytes.Buffer
	if code := flotctl.Run(context.Background(), []string{"-json", "bundle", "build", dir, "-o", store,
		"-baseline", "../controlplane/baseline/testdata/digits/train.csv", "-baseline-prediction", "label",
		"-baseline-monitor-names", "mean,ink,cx,cy"}, flotctl.Env{Stdout: &stdout, Stderr: &stderr}); code != 0 {
		t.Fatalf("flotctl bundle build: exit %d: %s", code, stderr.String())
	}
	var printed struct{ Digest string }
	if err := json.Unmarshal(stdout.Bytes(), &printed); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	s, err := bundle.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	_, m, err := s.Manifest(printed.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return dir, m, printed.Digest
}

func readFloatRows(t *testing.T, path string) [][]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var out [][]float64
	for first := true; sc.Scan(); first = false {
		if first {
			continue
		}
		var row []float64
		for _, s := range strings.Split(sc.Text(), ",") {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			row = append(row, v)
		}
		out = append(out, row)
	}
	return out
}

func pixelsTensor(px []float64) runtime.Tensor {
	data := make([]byte, 0, 4*len(px))
	for _, v := range px {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
	}
	return runtime.Tensor{Name: "pixels", DType: runtime.Float32, Shape: []int64{1, int64(len(px))}, Data: data}
}

// TestMonitorFunctionDriftScenario: a digits bundle whose drift is
// monitored through its WASM monitor function (mean intensity, ink, centre
// of mass), its baseline built by `flotctl bundle build -baseline` running
// the module over the training split. The agent's monitor records the
// test split through its metrics buffer (100 inferences a minute on a
// simulated clock): the writer runs the same module on each record's
// input row. Clean windows do not alert; dimmed images, and images moved
// two pixels right, do within two windows.
func TestMonitorFunctionDriftScenario(t *testing.T) {
	ctx := context.Background()
	dir, m, digest := digitsMonitorBundle(t)
	module, err := os.ReadFile(filepath.Join(dir, "monitor.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(module)
	var covered bool
	for _, f := range m.GetFiles() {
		covered = covered || (f.GetPath() == "monitor.wasm" && bytes.Equal(f.GetSha256(), sum[:]))
	}
	feats := m.GetDrift().GetFeatures()
	if !covered || m.GetMonitor().GetExport() != "features" || len(feats) != 4 || feats[2].GetName() != "cx" || feats[2].GetTensor() != "" {
		t.Fatalf("manifest: monitor %v, module covered %v, features %v", m.GetMonitor(), covered, feats)
	}

	clk := &stepClock{t: time.UnixMilli(1_760_000_040_000)}
	mon := newMonitor(nil, clk.Now)
	mon.fnCfg = monitorfn.Config{CacheDir: monitorCache}
	mon.slotDir = func(string, string) string { return dir } // the slot holds the bundle's files
	var events []string
	mon.event = func(_, code, _ string) { events = append(events, code) }
	buf, err := metrics.Open(ctx, t.TempDir(), metrics.Options{Now: clk.Now, Baselines: mon})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	defer mon.closeFunctions()
	buf.SetDevice("dev-1")
	res := lifecycle.Result{Release: 1, Version: "1.0.0", Slot: "a", Digest: digest, Manifest: m}
	mon.baseline("digits", res)
	bl, _ := mon.Baseline("digits", 1)
	serve := func(px []float64) {
		buf.Record(mon.record("digits", []runtime.Tensor{pixelsTensor(px)}, res, clk.Now(), time.Millisecond, true))
		clk.Advance(600 * time.Millisecond)
	}
	var collected []*pb.WindowSummary
	collect := func() {
		if _, err := buf.CloseWindows(ctx); err != nil {
			t.Fatal(err)
		}
		ack := &pb.Ack{DeviceId: "dev-1", Epoch: buf.Epoch()}
		if _, err := buf.Drain(ctx, func(_ context.Context, tm *pb.Telemetry) error {
			collected = append(collected, tm.GetSummaries().GetSummaries()...)
			ack.Sequences = append(ack.Sequences, tm.GetSequence())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := buf.Ack(ctx, ack); err != nil {
			t.Fatal(err)
		}
	}
	test := readFloatRows(t, "../controlplane/baseline/testdata/digits/test.csv")
	for _, row := range test[:400] {
		serve(row[:64])
	}
	collect()
	if len(collected) != 4 {
		t.Fatalf("%d clean windows, want 4", len(collected))
	}
	for i, s := range collected {
		t.Logf("clean window %d: n=%d js=%.3f psi=%.3f alert=%v", i, s.Requests, s.Scores.MaxJs, s.Scores.MaxPsi, s.Scores.Alert)
		if len(s.Features) != 4 || s.Features[0].GetCount() != 100 || s.Features[0].GetMissing() != 0 {
			t.Fatalf("clean window %d features: %v", i, s.Features)
		}
		if !s.Scores.Judged || s.Scores.Alert {
			t.Errorf("clean window %d alerted: %v", i, s.Scores)
		}
	}
	for _, shift := range []struct {
		name string
		move func(px []float64) []float64
	}{
		{"intensity x0.6", func(px []float64) []float64 {
			out := make([]float64, 64)
			for k, v := range px {
				out[k] = v * 0.6
			}
			return out
		}},
		{"two pixels right", func(px []float64) []float64 {
			out := make([]float64, 64)
			for k := range px {
				if x := k % 8; x >= 2 {
					out[k] = px[k-2]
				}
			}
			return out
		}},
	} {
		before := len(collected)
		for w := range 2 {
			for i := range 100 {
				serve(shift.move(test[(w*100+i)%len(test)][:64]))
			}
			collect()
		}
		alerted := false
		for i, s := range collected[before:] {
			t.Logf("%s, window %d: js=%.3f psi=%.3f alert=%v", shift.name, i, s.Scores.MaxJs, s.Scores.MaxPsi, s.Scores.Alert)
			alerted = alerted || (s.Scores.Alert && s.Scores.MaxJs > bl.Thresholds.JS)
		}
		if !alerted {
			t.Errorf("%s: no alert within two windows (js threshold %v)", shift.name, bl.Thresholds.JS)
		}
	}
	st, err := buf.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MonitorFailed != 0 || st.RawDropped != 0 || len(events) != 0 || mon.raw.used.Load() != 0 {
		t.Errorf("failed %d, dropped %d, events %v, raw bytes still held %d", st.MonitorFailed, st.RawDropped, events, mon.raw.used.Load())
	}
}

// TestMonitorFunctionFailures: with badmon as a release's monitor
// function, a record it returns an error for, or whose row is over the
// size limit, has its features missing and counted; a record that runs it
// out of fuel disables it for the release with an event, after which
// records carry no input.
func TestMonitorFunctionFailures(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	copyFile(t, monitorGuest(t, "badmon"), filepath.Join(dir, "bad.wasm"), 0o644)
	m := &pb.BundleManifest{Name: "bad", Release: 7, Version: "7",
		Inputs:  []*pb.TensorInfo{{Name: "x", Dtype: 2, Shape: []int64{-1, -1}}},
		Monitor: &pb.MonitorFunction{File: "bad.wasm", Export: "features"},
		Drift: &pb.DriftBaseline{Features: []*pb.FeatureBaseline{{Name: "len", BinEdges: []float64{2, 4}, Counts: []uint64{1, 1, 1}}},
			MinWindowRecords: 1}}
	clk := &stepClock{t: time.UnixMilli(1_760_000_040_000)}
	mon := newMonitor(nil, clk.Now)
	mon.fnCfg = monitorfn.Config{CacheDir: monitorCache, Fuel: 1 << 20}
	mon.slotDir = func(string, string) string { return dir }
	events := make(chan string, 4)
	mon.event = func(_, code, _ string) { events <- code }
	buf, err := metrics.Open(ctx, t.TempDir(), metrics.Options{Now: clk.Now, Baselines: mon})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	defer mon.closeFunctions()
	buf.SetDevice("dev-1")
	res := lifecycle.Result{Release: 7, Version: "7", Slot: "b", Manifest: m}
	serve := func(row []byte) metrics.Record {
		r := mon.record("bad", []runtime.Tensor{{Name: "x", DType: runtime.Uint8, Shape: []int64{1, int64(len(row))}, Data: row}},
			res, clk.Now(), time.Millisecond, true)
		buf.Record(r)
		if err := buf.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return r
	}
	stats := func() metrics.Stats {
		st, err := buf.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if r := serve([]byte{0, 0, 0}); r.Raw == nil || len(r.Raw.Data) != 3 {
		t.Fatalf("a good record carries %v", r.Raw)
	}
	serve([]byte{3, 0}) // the function's error -7
	if st := stats(); st.MonitorFailed != 1 || st.RawDropped != 0 {
		t.Fatalf("after an error: failed %d, dropped %d", st.MonitorFailed, st.RawDropped)
	}
	if r := serve(make([]byte, maxRawRow+1)); r.Raw == nil || r.Raw.Data != nil {
		t.Fatalf("an oversized row: %v", r.Raw)
	}
	if st := stats(); st.RawDropped != 1 {
		t.Fatalf("after an oversized row: dropped %d", st.RawDropped)
	}
	start := time.Now()
	serve([]byte{1}) // loops forever
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the looping record held the writer %v", d)
	}
	select {
	case code := <-events:
		if code != "monitor.disabled" {
			t.Errorf("event %q", code)
		}
	default:
		t.Fatal("no event for the function out of fuel")
	}
	if r := serve([]byte{0, 0, 0}); r.Raw != nil {
		t.Errorf("a record after the function was disabled carries %v", r.Raw)
	}
	if st := stats(); st.MonitorFailed != 2 {
		t.Errorf("failed %d, want 2 (the error and the loop)", st.MonitorFailed)
	}
	if used := mon.raw.used.Load(); used != 0 {
		t.Errorf("raw bytes still held: %d", used)
	}
	// The window: 5 requests, one with its feature present, 4 missing.
	clk.Advance(2 * time.Minute)
	if _, err := buf.CloseWindows(ctx); err != nil {
		t.Fatal(err)
	}
	var got []*pb.WindowSummary
	if _, err := buf.Drain(ctx, func(_ context.Context, tm *pb.Telemetry) error {
		got = append(got, tm.GetSummaries().GetSummaries()...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Requests != 5 || got[0].Features[0].GetCount() != 1 || got[0].Features[0].GetMissing() != 4 {
		t.Fatalf("window: %v", got)
	}
}

// TestRawBudget: the rows queued are bounded together, and given back.
func TestRawBudget(t *testing.T) {
	var b rawBudget
	if !b.take(maxRawBytes - 10) {
		t.Fatal("refused within the budget")
	}
	if b.take(11) {
		t.Fatal("took past the budget")
	}
	if !b.take(10) {
		t.Fatal("refused the last 10 bytes")
	}
	b.give(maxRawBytes)
	if b.used.Load() != 0 {
		t.Fatalf("used %d after giving all back", b.used.Load())
	}
}

// TestMonitorFunctionSamples: a function sampling 1 in 3 runs on the
// first of every three inferences; the others carry no input and are
// counted in the window as requests, their features neither seen nor
// missing.
func TestMonitorFunctionSamples(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	copyFile(t, monitorGuest(t, "badmon"), filepath.Join(dir, "bad.wasm"), 0o644)
	m := &pb.BundleManifest{Name: "s", Release: 1, Version: "1",
		Inputs:  []*pb.TensorInfo{{Name: "x", Dtype: 2, Shape: []int64{-1, -1}}},
		Monitor: &pb.MonitorFunction{File: "bad.wasm", Export: "features", SampleEvery: 3},
		Drift: &pb.DriftBaseline{Features: []*pb.FeatureBaseline{{Name: "len", BinEdges: []float64{2, 4}, Counts: []uint64{1, 1, 1}}},
			MinWindowRecords: 1}}
	clk := &stepClock{t: time.UnixMilli(1_760_000_040_000)}
	mon := newMonitor(nil, clk.Now)
	mon.fnCfg = monitorfn.Config{CacheDir: monitorCache}
	mon.slotDir = func(string, string) string { return dir }
	buf, err := metrics.Open(ctx, t.TempDir(), metrics.Options{Now: clk.Now, Baselines: mon})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	defer mon.closeFunctions()
	buf.SetDevice("dev-1")
	res := lifecycle.Result{Release: 1, Version: "1", Slot: "a", Manifest: m}
	var carried []int
	for i := range 7 {
		r := mon.record("s", []runtime.Tensor{{Name: "x", DType: runtime.Uint8, Shape: []int64{1, 3}, Data: []byte{0, 0, 0}}},
			res, clk.Now(), time.Millisecond, true)
		if r.Raw != nil {
			carried = append(carried, i)
		} else if !r.Unsampled {
			t.Fatalf("record %d neither carries its input nor is unsampled", i)
		}
		buf.Record(r)
	}
	if len(carried) != 3 || carried[0] != 0 || carried[1] != 3 || carried[2] != 6 {
		t.Fatalf("inputs carried by records %v, want 0, 3, 6", carried)
	}
	clk.Advance(2 * time.Minute)
	if _, err := buf.CloseWindows(ctx); err != nil {
		t.Fatal(err)
	}
	var got []*pb.WindowSummary
	if _, err := buf.Drain(ctx, func(_ context.Context, tm *pb.Telemetry) error {
		got = append(got, tm.GetSummaries().GetSummaries()...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Requests != 7 || got[0].Features[0].GetCount() != 3 || got[0].Features[0].GetMissing() != 0 ||
		got[0].Features[0].GetMean() != 3 {
		t.Fatalf("window: %v", got)
	}
}

// TestMonitorFunctionOneLoadedPerModel: when a model's next release
// serves, the previous release's function is unloaded once its queued
// records are computed; if the previous release serves again (a
// rollback), its function loads again and computes its records.
func TestMonitorFunctionOneLoadedPerModel(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	copyFile(t, monitorGuest(t, "badmon"), filepath.Join(dir, "bad.wasm"), 0o644)
	manifest := func(release uint64) *pb.BundleManifest {
		return &pb.BundleManifest{Name: "s", Release: release,
			Inputs:  []*pb.TensorInfo{{Name: "x", Dtype: 2, Shape: []int64{-1, -1}}},
			Monitor: &pb.MonitorFunction{File: "bad.wasm", Export: "features"},
			Drift:   &pb.DriftBaseline{Features: []*pb.FeatureBaseline{{Name: "len", BinEdges: []float64{2, 4}, Counts: []uint64{1, 1, 1}}}}}
	}
	mon := newMonitor(nil, time.Now)
	mon.fnCfg = monitorfn.Config{CacheDir: monitorCache}
	mon.slotDir = func(string, string) string { return dir }
	buf, err := metrics.Open(ctx, t.TempDir(), metrics.Options{Baselines: mon})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	defer mon.closeFunctions()
	in := []runtime.Tensor{{Name: "x", DType: runtime.Uint8, Shape: []int64{1, 3}, Data: []byte{0, 0, 0}}}
	serve := func(release uint64) *monitorFeatures {
		res := lifecycle.Result{Release: release, Slot: "a", Manifest: manifest(release)}
		r := mon.record("s", in, res, time.Now(), time.Millisecond, true)
		buf.Record(r)
		if err := buf.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		return r.Raw.Fn.(*monitorFeatures)
	}
	loaded := func(mf *monitorFeatures) bool {
		mf.mu.Lock()
		defer mf.mu.Unlock()
		return mf.fn != nil
	}
	eventually := func(what string, ok func() bool) {
		t.Helper()
		for start := time.Now(); !ok(); time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatal(what)
			}
		}
	}
	one := serve(1)
	if !loaded(one) {
		t.Fatal("release 1's function is not loaded after its record")
	}
	two := serve(2)
	eventually("release 1's function still loaded after release 2 served", func() bool { return !loaded(one) })
	if !loaded(two) {
		t.Fatal("release 2's function is not loaded after its record")
	}
	if again := serve(1); again != one || !loaded(one) {
		t.Fatal("release 1's function did not load again when it served again")
	}
	eventually("release 2's function still loaded after the rollback", func() bool { return !loaded(two) })
	st, err := buf.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MonitorFailed != 0 || st.Buffered != 3 {
		t.Errorf("failed %d, buffered %d", st.MonitorFailed, st.Buffered)
	}
}
