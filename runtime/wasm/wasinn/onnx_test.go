//go:build cgo

package wasinn_test

import (
	"context"
	"encoding/csv"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// need returns path if it exists; missing, it fails the test under CI and
// skips it elsewhere.
func need(t testing.TB, path, why string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v", why, err)
		}
		t.Skipf("%s: %v", why, err)
	}
	return path
}

// ortLib is $FLOTILLA_ORT_LIB or the library make deps caches.
func ortLib(t testing.TB) string {
	t.Helper()
	lib := os.Getenv("FLOTILLA_ORT_LIB")
	if lib == "" {
		cache, _ := os.UserCacheDir()
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
		lib = filepath.Join(cache, "flotilla", "onnxruntime", "1.30.0", "linux-"+arch, "libonnxruntime.so.1")
	}
	return need(t, lib, "libonnxruntime (run make deps)")
}

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// onnxBackend starts the real flotilla-runtime-onnx plugin, built once per
// test binary.
func onnxBackend(t testing.TB) *native.Plugin {
	t.Helper()
	lib := ortLib(t)
	pluginOnce.Do(func() {
		pluginDir = filepath.Join(tmpDir, "plugins")
		out, err := exec.Command("go", "build", "-o", filepath.Join(pluginDir, "flotilla-runtime-onnx"), "../../../cmd/flotilla-runtime-onnx").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("build plugin: %w\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	p, err := native.Start(context.Background(), filepath.Join(pluginDir, "flotilla-runtime-onnx"), native.Config{
		Env:          []string{"FLOTILLA_ORT_LIB=" + lib},
		Logger:       hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
		PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// sharedModels is $FLOTILLA_MODELS or ../shared/models beside the
// repository.
func sharedModels() string {
	if d := os.Getenv("FLOTILLA_MODELS"); d != "" {
		return d
	}
	d, _ := filepath.Abs("../../../../shared/models")
	return d
}

func readCSV(t testing.TB, path string, header bool, cols int) [][]float32 {
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
	models := filepath.Join(sharedModels(), "digits")
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

// TestGraphSurvivesPluginKill kills the real plugin process under a
// wasi-nn guest: calls fail while it restarts (the guest sees busy), then
// the graph is re-created and the outputs match the reference again.
func TestGraphSurvivesPluginKill(t *testing.T) {
	models := filepath.Join(sharedModels(), "digits")
	need(t, filepath.Join(models, "model.onnx"), "the digits model")
	p := onnxBackend(t)
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nndigits"], "model.onnx": filepath.Join(models, "model.onnx")})
	m := load(t, frontend(t, p), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm"})
	row := readCSV(t, filepath.Join(models, "test.csv"), true, 64)[0]
	want := readCSV(t, filepath.Join(models, "test_expected.csv"), false, 10)[0]
	in := []runtime.Tensor{f32Tensor("pixels", []int64{1, 64}, row)}
	check := func(out []runtime.Tensor) {
		t.Helper()
		for j, v := range f32s(out[0].Data) {
			if math.Abs(float64(v-want[j])) > 1e-4 {
				t.Fatalf("class %d: %v, expected %v", j, v, want[j])
			}
		}
	}
	out, err := m.Infer(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	check(out)
	pid := p.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	failures := 0
	for {
		out, err = m.Infer(context.Background(), in)
		if err == nil {
			break
		}
		failures++
		if time.Now().After(deadline) {
			t.Fatalf("no answer 30 s after the kill: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	check(out)
	if p.Crashes() != 1 || p.Pid() == pid {
		t.Fatalf("crashes %d, pid %d (was %d)", p.Crashes(), p.Pid(), pid)
	}
	t.Logf("%d calls failed while the plugin restarted", failures)
}

// TestLoadByNameStaysOutOfGuestMemory loads mobilenetv2 (14 MB) by name
// from a guest whose memory is capped at 12 MiB: had the model passed
// through guest memory, the guest could not hold it. The outputs match
// the model's reference to 1e-4.
func TestLoadByNameStaysOutOfGuestMemory(t *testing.T) {
	models := filepath.Join(sharedModels(), "mobilenetv2")
	model := need(t, filepath.Join(models, "model.onnx"), "the mobilenetv2 model")
	st, err := os.Stat(model)
	if err != nil {
		t.Fatal(err)
	}
	const capMiB = 12
	if st.Size() <= capMiB<<20 {
		t.Fatalf("the model is %d bytes, not more than the %d MiB cap: the test proves nothing", st.Size(), capMiB)
	}
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nnforward"], "model.onnx": model})
	m := load(t, frontend(t, onnxBackend(t)), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm", Options: map[string]string{"memory_limit_mib": fmt.Sprint(capMiB)}})
	in, err := readTensorProto(filepath.Join(models, "test_data_set_0", "input_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := readTensorProto(filepath.Join(models, "test_data_set_0", "output_0.pb"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Infer(context.Background(), []runtime.Tensor{in})
	if err != nil {
		t.Fatal(err)
	}
	got, exp := f32s(out[0].Data), f32s(want.Data)
	if len(got) != len(exp) {
		t.Fatalf("%d outputs, want %d", len(got), len(exp))
	}
	for i := range exp {
		if math.Abs(float64(got[i]-exp[i])) > 1e-4 {
			t.Fatalf("output %d: %v, want %v", i, got[i], exp[i])
		}
	}
}
