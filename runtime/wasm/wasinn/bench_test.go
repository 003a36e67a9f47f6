//go:build cgo

package wasinn_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

// BenchmarkWASINN measures one inference of the same model and input
// three ways, interleaved call by call so that a noisy machine weighs on
// all three alike: ONNX Runtime in process (runtime/onnx), through the
// plugin (runtime/native), and from a WASM guest (nnforward) through
// wasi_ephemeral_nn to the same plugin. It reports p50 and p99 of each
// and the p50 ratios; ns/op is the three calls together.
//
// Models: $FLOTILLA_MODELS or ../shared/models (digits, mobilenetv2).
// FLOTILLA_BENCH_THREADS=n pins ONNX Runtime's intra-op threads.
func BenchmarkWASINN(b *testing.B) {
	for _, c := range []struct {
		name  string
		input func(b *testing.B, dir string) runtime.Tensor
	}{
		{"digits", func(b *testing.B, dir string) runtime.Tensor {
			row := readCSV(b, filepath.Join(dir, "test.csv"), true, 64)[0]
			return f32Tensor("", []int64{1, 64}, row)
		}},
		{"mobilenetv2", func(b *testing.B, dir string) runtime.Tensor {
			in, err := readTensorProto(filepath.Join(dir, "test_data_set_0", "input_0.pb"))
			if err != nil {
				b.Fatal(err)
			}
			return in
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := filepath.Join(sharedModels(), c.name)
			need(b, filepath.Join(dir, "model.onnx"), "the "+c.name+" model")
			benchThree(b, dir, c.input(b, dir))
		})
	}
}

func benchThree(b *testing.B, modelDir string, in runtime.Tensor) {
	ctx := context.Background()
	opts := benchOptions()
	spec := runtime.LoadSpec{Dir: modelDir, Entry: "model.onnx", Options: opts}
	ort, err := onnx.Open(ortLib(b))
	if err != nil {
		b.Fatal(err)
	}
	defer ort.Close()
	direct, err := ort.Load(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	p := onnxBackend(b)
	viaPlugin, err := p.Load(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	slot := slotWith(b, map[string]string{"nn.wasm": guests["nnforward"], "model.onnx": filepath.Join(modelDir, "model.onnx")})
	// The guest's graph is the same model on the same plugin, loaded by
	// name with the same options (a bundle variant's options reach the
	// backend through the slot's spec).
	viaWASM := load(b, frontend(b, optionsBackend{p, opts}), runtime.LoadSpec{Dir: slot, Entry: "nn.wasm"})

	in.Name = direct.Inputs()[0].Name
	want, err := direct.Infer(ctx, []runtime.Tensor{in})
	if err != nil {
		b.Fatal(err)
	}
	paths := []struct {
		name string
		call func() ([]runtime.Tensor, error)
	}{
		{"direct", func() ([]runtime.Tensor, error) { return direct.Infer(ctx, []runtime.Tensor{in}) }},
		{"plugin", func() ([]runtime.Tensor, error) { return viaPlugin.Infer(ctx, []runtime.Tensor{in}) }},
		{"wasi-nn", func() ([]runtime.Tensor, error) { return viaWASM.Infer(ctx, []runtime.Tensor{in}) }},
	}
	for _, path := range paths { // warm up, and check all three agree
		out, err := path.call()
		if err != nil {
			b.Fatalf("%s: %v", path.name, err)
		}
		if string(out[0].Data) != string(want[0].Data) {
			b.Fatalf("%s: output differs from the direct run", path.name)
		}
	}
	lat := make([][]time.Duration, len(paths))
	for b.Loop() {
		for i, path := range paths {
			start := time.Now()
			if _, err := path.call(); err != nil {
				b.Fatal(err)
			}
			lat[i] = append(lat[i], time.Since(start))
		}
	}
	p50 := make([]float64, len(paths))
	for i, path := range paths {
		slices.Sort(lat[i])
		p50[i] = float64(lat[i][len(lat[i])/2].Nanoseconds()) / 1e3
		b.ReportMetric(p50[i], path.name+"-p50-µs")
		b.ReportMetric(float64(lat[i][len(lat[i])*99/100].Nanoseconds())/1e3, path.name+"-p99-µs")
	}
	b.ReportMetric(p50[1]/p50[0], "plugin/direct")
	b.ReportMetric(p50[2]/p50[1], "wasi-nn/plugin")
}

// optionsBackend adds the bundle variant's options to every load.
type optionsBackend struct {
	runtime.Runtime
	opts map[string]string
}

func (o optionsBackend) Load(ctx context.Context, spec runtime.LoadSpec) (runtime.Model, error) {
	spec.Options = o.opts
	return o.Runtime.Load(ctx, spec)
}

func benchOptions() map[string]string {
	if n := os.Getenv("FLOTILLA_BENCH_THREADS"); n != "" {
		return map[string]string{onnx.OptIntraOpThreads: n}
	}
	return nil
}
