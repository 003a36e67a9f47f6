package agent

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

type benchChunks map[[32]byte][]byte

func (c benchChunks) PutChunk(sum [32]byte, data []byte) error {
	c[sum] = append([]byte(nil), data...)
	return nil
}

func (c benchChunks) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	if b, ok := c[sum]; ok {
		return b, nil
	}
	return nil, os.ErrNotExist
}

// benchDigits activates the digits bundle (with its drift baseline: 64
// pixel features and the predicted class) on the real ONNX plugin, and
// returns the lifecycle, the model's name and one input row.
func benchDigits(b *testing.B) (*lifecycle.Lifecycle, string, []runtime.Tensor) {
	l := benchActivate(b, filepath.Join("..", "controlplane", "bundle", "testdata", "digits"))
	rowsJSON, err := os.ReadFile(filepath.Join("lifecycle", "testdata", "digits", "rows.json"))
	if err != nil {
		b.Fatal(err)
	}
	var rows struct {
		Pixels [][]float64 `json:"pixels"`
	}
	if err := json.Unmarshal(rowsJSON, &rows); err != nil {
		b.Fatal(err)
	}
	var data []byte
	for _, v := range rows.Pixels[0] {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
	}
	return l, "digits", []runtime.Tensor{{Name: "pixels", DType: runtime.Float32, Shape: []int64{1, 64}, Data: data}}
}

// benchMobileNet activates a bundle of the shared mobilenetv2 model (a
// realistic image model: 3×224×224 in, 1000 logits out) with a drift
// baseline of 64 input pixels and the predicted class, and returns the
// lifecycle, the model's name and one deterministic image. The model is
// ../shared/models/mobilenetv2 (or $FLOTILLA_MODELS); missing, the
// benchmark fails under CI and is skipped elsewhere.
func benchMobileNet(b *testing.B) (*lifecycle.Lifecycle, string, []runtime.Tensor) {
	models := os.Getenv("FLOTILLA_MODELS")
	if models == "" {
		models = filepath.Join("..", "..", "shared", "models")
	}
	model := filepath.Join(models, "mobilenetv2", "model.onnx")
	if _, err := os.Stat(model); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatalf("the mobilenetv2 model is missing: %v", err)
		}
		b.Skipf("the mobilenetv2 model is missing: %v", err)
	}
	src := b.TempDir()
	onnx, err := os.ReadFile(model)
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "model.onnx"), onnx, 0o644); err != nil {
		b.Fatal(err)
	}
	var cfg strings.Builder
	cfg.WriteString(`name = "mobilenetv2"
release = 1
version = "1.0.0"
kind = "model"

[[variants]]
runtime = "onnx"
entry = "model.onnx"

[[inputs]]
name = "image"
dtype = "float32"
shape = [-1, 3, 224, 224]

[[outputs]]
name = "logits"
dtype = "float32"
shape = [-1, 1000]
`)
	const pixels = 3 * 224 * 224
	for f := range 64 {
		fmt.Fprintf(&cfg, "\n[[drift.features]]\nname = \"px%d\"\ntensor = \"image\"\nindex = %d\nbin_edges = [-1.0, -0.5, 0.0, 0.5, 1.0]\ncounts = [1, 1, 1, 1, 1, 1]\n", f, f*(pixels/64))
	}
	cfg.WriteString("\n[drift.prediction]\nname = \"class\"\ntensor = \"logits\"\ncategories = [\"0\", \"1\", \"2\", \"3\"]\ncounts = [1, 1, 1, 1, 1]\n")
	if err := os.WriteFile(filepath.Join(src, "bundle.toml"), []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	l := benchActivate(b, src)
	data := make([]byte, 0, 4*pixels)
	for i := range pixels {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i%251)/125-1))
	}
	return l, "mobilenetv2", []runtime.Tensor{{Name: "image", DType: runtime.Float32, Shape: []int64{1, 3, 224, 224}, Data: data}}
}

// benchActivate builds the bundle in src, checks it carries a drift
// baseline, and activates it on the real ONNX plugin.
func benchActivate(b *testing.B, src string) *lifecycle.Lifecycle {
	ctx := context.Background()
	p, err := native.Start(ctx, onnxPluginBin(b), native.Config{Env: []string{"FLOTILLA_ORT_LIB=" + ortLib(b)},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr})})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { p.Close() })
	cs := benchChunks{}
	raw, _, err := bundle.Build(src, bundle.Options{Chunks: cs})
	if err != nil {
		b.Fatal(err)
	}
	m := &flotillapb.BundleManifest{}
	if err := wire.Decode(raw, flotillapb.MaxManifestSize, m); err != nil {
		b.Fatal(err)
	}
	if m.GetDrift() == nil || len(m.GetDrift().GetFeatures()) == 0 {
		b.Fatal("the digits bundle carries no drift baseline")
	}
	dir := b.TempDir()
	db, err := state.Open(ctx, filepath.Join(dir, "state"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	l, err := lifecycle.Open(ctx, lifecycle.Config{Dir: filepath.Join(dir, "models"), Store: db, Runtimes: lifecycle.RuntimeList{p}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	slot, err := l.PrepareSlot(ctx, m.GetName(), 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unpack.Unpack(ctx, cs, m, slot, unpack.Limits{}); err != nil {
		b.Fatal(err)
	}
	if err := l.Stage(ctx, raw); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkMonitorInfer is the agent's inference path for digits and
// mobilenetv2 (each with 64 monitored features and the predicted class) on
// the real ONNX plugin with the metrics buffering off and on, side by side:
// "off" is the monitor with no recorder (the lifecycle's Infer and the
// monitor's bookkeeping), "on" the same monitor recording every inference
// (64 features and the prediction read from the tensors) into a real
// metrics buffer, whose SQLite writer runs meanwhile and has written every
// record before the timer stops; "on-nolinger" is "on" with the writer
// as it was before Options.Linger (a transaction for whatever was queued,
// however little). Sequential (one caller) and parallel
// (GOMAXPROCS callers). The target: "on" loses at most 5 % of
// "off"'s inferences per second.
func BenchmarkMonitorInfer(b *testing.B) {
	for _, model := range []struct {
		name  string
		setup func(*testing.B) (*lifecycle.Lifecycle, string, []runtime.Tensor)
	}{{"digits", benchDigits}, {"mobilenetv2", benchMobileNet}} {
		b.Run(model.name, func(b *testing.B) {
			l, name, in := model.setup(b)
			benchMonitor(b, l, name, in)
		})
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchMonitor(b *testing.B, l *lifecycle.Lifecycle, name string, in []runtime.Tensor) {
	for _, mode := range []string{"sequential", "parallel"} {
		for _, rec := range []string{"off", "on", "on-nolinger"} {
			b.Run(mode+"/"+rec, func(b *testing.B) {
				ctx := context.Background()
				mon := newMonitor(l, time.Now)
				var buf *metrics.Buffer
				if rec != "off" {
					linger := time.Duration(0) // the default
					if rec == "on-nolinger" {
						linger = -1
					}
					var err error
					buf, err = metrics.Open(ctx, b.TempDir(), metrics.Options{Baselines: mon, Counters: mon,
						QuotaBytes: 1 << 30, Linger: linger})
					if err != nil {
						b.Fatal(err)
					}
					defer buf.Close()
					mon.rec = buf
				}
				infer := func() {
					if _, err := mon.Infer(ctx, name, in); err != nil {
						b.Error(err)
					}
				}
				cpu0 := processCPU(b)
				b.ResetTimer()
				if mode == "sequential" {
					for range b.N {
						infer()
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							infer()
						}
					})
				}
				if buf != nil {
					if err := buf.Sync(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "infer/s")
				// The agent process's CPU per inference (the plugin's runs in
				// its own process): what recording adds, less sensitive than
				// the rate to other load on the machine.
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "agent-cpu-us/infer")
				if buf != nil {
					st, err := buf.Stats(ctx)
					if err != nil {
						b.Fatal(err)
					}
					if st.Buffered+st.Dropped != uint64(b.N) {
						b.Fatalf("buffered %d + dropped %d records of %d inferences", st.Buffered, st.Dropped, b.N)
					}
					b.ReportMetric(float64(st.Dropped), "dropped")
				}
			})
		}
	}
}

// BenchmarkRecordPath is recording alone, without the inference: one
// digits inference's result recorded b.N times — the hot path's part
// (features read, prediction, enqueue: ns/op and allocs/op) and, in
// agent-cpu-us/record, the process's CPU per record with the metrics
// writer's SQLite work included (it is measured to the last Sync).
func BenchmarkRecordPath(b *testing.B) {
	l, name, in := benchDigits(b)
	ctx := context.Background()
	mon := newMonitor(l, time.Now)
	res, err := l.Infer(ctx, name, in)
	if err != nil {
		b.Fatal(err)
	}
	buf, err := metrics.Open(ctx, b.TempDir(), metrics.Options{Baselines: mon, Counters: mon, QuotaBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	defer buf.Close()
	mon.rec = buf
	at := time.Now()
	b.ReportAllocs()
	cpu0 := processCPU(b)
	b.ResetTimer()
	for range b.N {
		mon.rec.Record(mon.record(name, in, res, at, 20*time.Microsecond, true))
	}
	b.StopTimer()
	if err := buf.Sync(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(time.Microsecond)/float64(b.N), "agent-cpu-us/record")
	st, err := buf.Stats(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if st.Buffered+st.Dropped != uint64(b.N) {
		b.Fatalf("buffered %d + dropped %d records of %d", st.Buffered, st.Dropped, b.N)
	}
	b.ReportMetric(float64(st.Dropped), "dropped")
}
