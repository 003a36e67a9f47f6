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
	in.Name = direct.Inputs()[0].Name
	for _, c := range []struct {
		name string
		m    runtime.Model
	}{{"direct", direct}, {"plugin", viaPlugin}} {
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
			if c.name == "plugin" {
				b.ReportMetric(rssMiB(p.Pid()), "plugin-rss-MiB")
			}
		})
	}
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
