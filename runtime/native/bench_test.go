//go:build cgo

package native

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

// benchModel runs the same model and input in process (runtime/onnx, the
// baseline) and through the plugin (runtime/native), side by side, and
// reports p50/p99 latency besides the mean.
func benchModel(b *testing.B, dir string, in runtime.Tensor) {
	ctx := context.Background()
	spec := runtime.LoadSpec{Dir: dir, Entry: "model.onnx", Options: benchOptions()}
	rt, err := onnx.Open(ortLib(b))
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	direct, err := rt.Load(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	p := startONNX(b)
	viaPlugin, err := p.Load(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	// The same plugin binary with Infer channels off: gRPC alone, as a
	// protocol 1 plugin is reached.
	cfg := testConfig(b)
	cfg.grpcOnly = true
	pg, err := Start(ctx, filepath.Join(pluginDir, "flotilla-runtime-onnx"), cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pg.Close()
	viaGRPC, err := pg.Load(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	in.Name = direct.Inputs()[0].Name
	for _, c := range []struct {
		name string
		m    runtime.Model
		p    *Plugin
	}{{"direct", direct, nil}, {"plugin", viaPlugin, p}, {"plugin-grpc", viaGRPC, pg}} {
		b.Run(c.name, func(b *testing.B) {
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				if _, err := c.m.Infer(ctx, []runtime.Tensor{in}); err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			if c.p != nil {
				b.ReportMetric(rssMiB(c.p.Pid()), "plugin-rss-MiB")
			}
		})
	}
	// paired alternates a direct and a plugin call in each iteration, so
	// the noise of a shared machine lands on both alike, and reports the
	// median of the per-pair differences: the plugin's overhead.
	b.Run("paired", func(b *testing.B) {
		var dl, pl, delta []time.Duration
		for b.Loop() {
			t0 := time.Now()
			if _, err := direct.Infer(ctx, []runtime.Tensor{in}); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := viaPlugin.Infer(ctx, []runtime.Tensor{in}); err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			dl, pl, delta = append(dl, t1.Sub(t0)), append(pl, t2.Sub(t1)), append(delta, t2.Sub(t1)-t1.Sub(t0))
		}
		for _, s := range [][]time.Duration{dl, pl, delta} {
			slices.Sort(s)
		}
		d50, p50, o50 := dl[len(dl)/2], pl[len(pl)/2], delta[len(delta)/2]
		b.ReportMetric(float64(d50.Microseconds()), "direct-p50-µs")
		b.ReportMetric(float64(p50.Microseconds()), "plugin-p50-µs")
		b.ReportMetric(float64(o50.Microseconds()), "overhead-p50-µs")
		b.ReportMetric(100*float64(o50)/float64(d50), "overhead-%")
	})
}

// rssMiB is a process's resident memory, from /proc.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}

func BenchmarkDigits(b *testing.B) {
	dir := sharedModel(b, "digits")
	row := readCSV(b, filepath.Join(dir, "test.csv"), 64)[0]
	benchModel(b, dir, runtime.Tensor{DType: runtime.Float32, Shape: []int64{1, 64}, Data: f32bytes(row)})
}

func BenchmarkMobileNet(b *testing.B) {
	dir := sharedModel(b, "mobilenetv2")
	in, err := readTensorProto(filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	if err != nil {
		b.Fatal(err)
	}
	benchModel(b, dir, in)
}

// benchOptions: FLOTILLA_BENCH_THREADS=n pins ONNX Runtime's intra-op
// threads (on a 2-core machine the default pool's spinning threads in two
// processes fight over the cores).
func benchOptions() map[string]string {
	if n := os.Getenv("FLOTILLA_BENCH_THREADS"); n != "" {
		return map[string]string{onnx.OptIntraOpThreads: n}
	}
	return nil
}
