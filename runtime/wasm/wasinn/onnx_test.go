//go:build cgo

package wasinn_test

import (
	"context"
	"encoding/csv"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// need returns path if it exists; missing, it fails the test under CI and
// skips it elsewhere.
func need(t *testing.T, path, why string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", why, err)
		}
		t.Skipf("%s: %v", why, err)
	}
	return path
}

// onnxBackend starts the real flotilla-runtime-onnx plugin.
func onnxBackend(t *testing.T) runtime.Runtime {
	t.Helper()
	lib := os.Getenv("FLOTILLA_ORT_LIB")
	if lib == "" {
		cache, _ := os.UserCacheDir()
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
		lib = filepath.Join(cache, "flotilla", "onnxruntime", "1.30.0", "linux-"+arch, "libonnxruntime.so.1")
	}
	need(t, lib, "libonnxruntime (run make deps)")
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "flotilla-runtime-onnx"), "../../../cmd/flotilla-runtime-onnx").CombinedOutput(); err != nil {
		t.Fatalf("build plugin: %v\n%s", err, out)
	}
	h, err := native.Open(context.Background(), native.Config{
		Dir:    dir,
		Env:    []string{"FLOTILLA_ORT_LIB=" + lib},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	p, ok := h.Runtime("onnx")
	if !ok {
		t.Fatalf("the onnx plugin did not start: %v", h.Failed())
	}
	return p
}

func readCSV(t *testing.T, path string, header bool, cols int) [][]float32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if header {
		recs = recs[1:]
	}
	var rows [][]float32
	for _, r := range recs {
		row := make([]float32, cols)
		for i := range cols {
			v, err := strconv.ParseFloat(r[i], 32)
			if err != nil {
				t.Fatal(err)
			}
			row[i] = float32(v)
		}
		rows = append(rows, row)
	}
	return rows
}

// TestDigitsThroughONNX runs ../shared/models/digits from WASM: the
// nndigits guest loads model.onnx by name through wasi_ephemeral_nn, and
// ONNX Runtime in the real plugin computes. Outputs must match the
// model's reference outputs to 1e-4.
func TestDigitsThroughONNX(t *testing.T) {
	models, _ := filepath.Abs("../../../../shared/models/digits")
	need(t, filepath.Join(models, "model.onnx"), "the digits model")
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nndigits"], "model.onnx": filepath.Join(models, "model.onnx")})
	m := load(t, frontend(t, onnxBackend(t)), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm", Providers: []string{"cpu"}})

	pixels := readCSV(t, filepath.Join(models, "test.csv"), true, 64)
	expected := readCSV(t, filepath.Join(models, "test_expected.csv"), false, 10)
	var flat []float32
	for _, r := range pixels {
		flat = append(flat, r...)
	}
	out, err := m.Infer(context.Background(), []runtime.Tensor{f32Tensor("pixels", []int64{int64(len(pixels)), 64}, flat)})
	if err != nil {
		t.Fatal(err)
	}
	got := f32s(out[0].Data)
	if len(got) != len(expected)*10 {
		t.Fatalf("%d outputs for %d rows", len(got), len(expected))
	}
	for i, row := range expected {
		for j, want := range row {
			if d := math.Abs(float64(got[i*10+j] - want)); d > 1e-4 {
				t.Fatalf("row %d class %d: %v, expected %v", i, j, got[i*10+j], want)
			}
		}
	}
	// One row at a time works too (the graph is loaded once, reused).
	for i := range 3 {
		out, err := m.Infer(context.Background(), []runtime.Tensor{f32Tensor("pixels", []int64{1, 64}, pixels[i])})
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range f32s(out[0].Data) {
			if math.Abs(float64(v-expected[i][j])) > 1e-4 {
				t.Fatalf("single row %d class %d: %v, expected %v", i, j, v, expected[i][j])
			}
		}
	}
	t.Logf("%d rows match the reference outputs", len(expected))
}
