//go:build cgo

package native

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
)

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

func f32bytes(vs []float32) []byte {
	b := make([]byte, 0, 4*len(vs))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// readCSV reads a CSV of numbers with a header line; keep trims each row.
func readCSV(t testing.TB, path string, keep int) [][]float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows [][]float32
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for first := true; sc.Scan(); first = false {
		fields := strings.Split(sc.Text(), ",")
		if first && len(fields) > 0 {
			if _, err := strconv.ParseFloat(fields[0], 32); err != nil {
				continue // header
			}
		}
		row := make([]float32, 0, keep)
		for _, s := range fields[:keep] {
			v, err := strconv.ParseFloat(s, 32)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			row = append(row, float32(v))
		}
		rows = append(rows, row)
	}
	return rows
}

func maxDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func TestDigitsThroughPlugin(t *testing.T) {
	dir := sharedModel(t, "digits")
	p := startONNX(t)
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: "model.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	in := readCSV(t, filepath.Join(dir, "test.csv"), 64)
	want := readCSV(t, filepath.Join(dir, "test_expected.csv"), 10)
	if len(in) != 450 || len(want) != len(in) {
		t.Fatalf("%d rows, %d expected", len(in), len(want))
	}
	// Row by row, as the agent's API serves them, and all in one batch.
	var batch []float32
	for i, row := range in {
		out, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "pixels", DType: runtime.Float32, Shape: []int64{1, 64}, Data: f32bytes(row)}})
		if err != nil {
			t.Fatal(err)
		}
		if d := maxDiff(f32s(out[0].Data), want[i]); d > 1e-4 {
			t.Fatalf("row %d differs by %g", i, d)
		}
		batch = append(batch, row...)
	}
	out, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "pixels", DType: runtime.Float32, Shape: []int64{450, 64}, Data: f32bytes(batch)}})
	if err != nil {
		t.Fatal(err)
	}
	got := f32s(out[0].Data)
	for i := range want {
		if d := maxDiff(got[10*i:10*i+10], want[i]); d > 1e-4 {
			t.Fatalf("batch row %d differs by %g", i, d)
		}
	}
}

// TestMobileNetThroughPlugin checks test_data_set_0, and a batch of 8
// (4.8 MiB in: above gRPC's default 4 MiB).
func TestMobileNetThroughPlugin(t *testing.T) {
	dir := sharedModel(t, "mobilenetv2")
	in, err := readTensorProto(filepath.Join(dir, "test_data_set_0", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readTensorProto(filepath.Join(dir, "test_data_set_0", "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	p := startONNX(t)
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: "model.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	in.Name = m.Inputs()[0].Name
	out, err := m.Infer(context.Background(), []runtime.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxDiff(f32s(out[0].Data), f32s(want.Data)); d > 1e-4 {
		t.Fatalf("output differs by %g", d)
	}
	big := runtime.Tensor{Name: in.Name, DType: runtime.Float32, Shape: []int64{8, 3, 224, 224}}
	for range 8 {
		big.Data = append(big.Data, in.Data...)
	}
	out, err = m.Infer(context.Background(), []runtime.Tensor{big})
	if err != nil {
		t.Fatal(err)
	}
	got := f32s(out[0].Data)
	for i := range 8 {
		if d := maxDiff(got[1000*i:1000*(i+1)], f32s(want.Data)); d > 1e-4 {
			t.Fatalf("batch item %d differs by %g", i, d)
		}
	}
}

// TestLargeTensorRoundTrip sends and receives 8 MiB.
func TestLargeTensorRoundTrip(t *testing.T) {
	p := startONNX(t)
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	const n = 1 << 20 // rows of 2 float32: 8 MiB
	x := make([]float32, 2*n)
	for i := range x {
		x[i] = float32(i % 1000)
	}
	out, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{n, 2}, Data: f32bytes(x)}})
	if err != nil {
		t.Fatal(err)
	}
	y := f32s(out[0].Data)
	if len(y) != 2*n {
		t.Fatalf("%d values", len(y))
	}
	for i := range y {
		if want := x[i] + 10 + 10*float32(i%2); y[i] != want {
			t.Fatalf("y[%d] = %g, want %g", i, y[i], want)
		}
	}
}

func TestHostDiscoversAndNegotiates(t *testing.T) {
	cfg := testConfig(t)
	dir := t.TempDir()
	bin, err := os.ReadFile(filepath.Join(pluginDir, "flotilla-runtime-onnx"))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		data []byte
		mode os.FileMode
	}{
		"flotilla-runtime-onnx":  {bin, 0o755},
		"flotilla-runtime-bogus": {[]byte("#!/bin/sh\necho not a plugin >&2\nexit 3\n"), 0o755},
		"flotilla-runtime-noexe": {[]byte("x"), 0o644},
		"other-binary":           {[]byte("#!/bin/sh\nexit 0\n"), 0o755},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), c.data, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Dir = dir
	found, err := Discover(dir)
	if err != nil || len(found) != 2 {
		t.Fatalf("discover: %v %v", found, err)
	}
	h, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if len(h.Failed()) != 1 || h.Failed()[filepath.Join(dir, "flotilla-runtime-bogus")] == nil {
		t.Fatalf("failed: %v", h.Failed())
	}
	p, ok := h.Runtime("onnx")
	if !ok || len(h.Plugins()) != 1 {
		t.Fatalf("plugins: %v", h.Plugins())
	}
	info := p.Describe()
	if info.Name != "onnx" || !strings.HasPrefix(info.Version, "1.30") || info.ExecutionProviders[len(info.ExecutionProviders)-1] != "cpu" {
		t.Fatalf("describe: %+v", info)
	}
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx", Providers: []string{"cuda", "cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	// This machine's own /proc and /sys: no NVIDIA GPU on the CI runners.
	if name, reason := m.(runtime.LoadResult).Provider(); name != "cpu" || reason != "cuda: no usable NVIDIA GPU found (a GPU, its driver and its /dev node)" {
		t.Fatalf("provider %q, fallback %q", name, reason)
	}
	if _, err := Open(context.Background(), Config{Dir: filepath.Join(dir, "missing")}); err == nil {
		t.Fatal("missing folder: no error")
	}
}

func TestErrorsCrossTheBoundary(t *testing.T) {
	p := startONNX(t)
	ctx := context.Background()
	for _, entry := range []string{"../add.onnx", "/etc/passwd", "missing.onnx"} {
		if _, err := p.Load(ctx, runtime.LoadSpec{Dir: "../onnx/testdata", Entry: entry}); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("load %q: got %v, want ErrInvalidInput", entry, err)
		}
	}
	m, err := p.Load(ctx, runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "identity_scalar.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	var in []runtime.Tensor
	for _, info := range m.Inputs() {
		in = append(in, runtime.Tensor{Name: info.Name, DType: info.DType, Shape: []int64{}, Data: make([]byte, info.DType.Size()), Strings: map[bool][]string{true: {""}}[info.DType == runtime.String]})
	}
	if _, err := m.Infer(ctx, in); !errors.Is(err, runtime.ErrUnsupported) {
		t.Errorf("rank-0 float16: got %v, want ErrUnsupported", err)
	}
	if _, err := m.Infer(ctx, in[:1]); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("missing inputs: got %v, want ErrInvalidInput", err)
	}
	m.Close()
	if _, err := m.Infer(ctx, in); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("closed model: got %v, want ErrUnavailable", err)
	}
}

// TestEdgeTensorsThroughPlugin: every dtype, zero-size tensors and a model
// with no inputs, across the process boundary.
func TestEdgeTensorsThroughPlugin(t *testing.T) {
	p := startONNX(t)
	ctx := context.Background()
	for _, c := range []struct {
		entry string
		shape []int64
	}{{"identity_static.onnx", []int64{2, 3}}, {"identity_zero.onnx", []int64{0, 3}}} {
		m, err := p.Load(ctx, runtime.LoadSpec{Dir: "../onnx/testdata", Entry: c.entry})
		if err != nil {
			t.Fatal(err)
		}
		var in []runtime.Tensor
		for _, info := range m.Inputs() {
			x := runtime.Tensor{Name: info.Name, DType: info.DType, Shape: c.shape}
			n, _ := x.Elements()
			if info.DType == runtime.String {
				x.Strings = make([]string, n)
				for i := range x.Strings {
					x.Strings[i] = "s" + strconv.Itoa(i)
				}
			} else {
				x.Data = make([]byte, n*int64(info.DType.Size()))
				for i := range x.Data {
					x.Data[i] = byte(i) % 2
				}
			}
			in = append(in, x)
		}
		out, err := m.Infer(ctx, in)
		if err != nil {
			t.Fatalf("%s: %v", c.entry, err)
		}
		if len(out) != len(in) || len(m.Inputs()) != 14 {
			t.Fatalf("%s: %d outputs", c.entry, len(out))
		}
		for i := range in {
			if out[i].DType != in[i].DType || string(out[i].Data) != string(in[i].Data) || strings.Join(out[i].Strings, ",") != strings.Join(in[i].Strings, ",") || len(out[i].Shape) != 2 || out[i].Shape[0] != c.shape[0] {
				t.Errorf("%s %v: got %+v, want %+v", c.entry, in[i].DType, out[i], in[i])
			}
		}
	}
	m, err := p.Load(ctx, runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "constant.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Infer(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := f32s(out[0].Data); len(got) != 2 || got[0] != 1.5 || got[1] != -2 || len(out[1].Shape) != 0 || f32s(out[1].Data)[0] != 7 {
		t.Fatalf("constant: %+v", out)
	}
}
