//go:build cgo

package onnx

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
)

// openTest opens the runtime on the cached library; a missing library
// fails the test under CI and skips it elsewhere.
func openTest(t testing.TB) *Runtime {
	t.Helper()
	lib := DefaultLibrary()
	if _, err := os.Stat(lib); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("libonnxruntime not found at %q (run make deps): %v", lib, err)
		}
		t.Skipf("libonnxruntime not found at %q (run make deps)", lib)
	}
	r, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func load(t testing.TB, r *Runtime, dir, entry string) runtime.Model {
	t.Helper()
	m, err := r.Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: entry})
	if err != nil {
		t.Fatalf("load %s: %v", entry, err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func f32(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func TestOpenVersionAndDescribe(t *testing.T) {
	r := openTest(t)
	if !versionAtLeast(r.Version(), MinVersion) {
		t.Fatalf("version %q", r.Version())
	}
	info := r.Describe()
	if info.Name != "onnx" || info.Version != r.Version() {
		t.Fatalf("describe: %+v", info)
	}
	if eps := info.ExecutionProviders; len(eps) == 0 || eps[len(eps)-1] != "cpu" {
		t.Fatalf("providers %v: cpu must come last", eps)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "libonnxruntime.so.1")); !errors.Is(err, runtime.ErrUnavailable) {
		t.Fatalf("missing library: %v", err)
	}
}

func TestVersionAtLeast(t *testing.T) {
	for _, c := range []struct {
		v    string
		want bool
	}{{"1.30.0", true}, {"1.24.0", true}, {"1.24", false}, {"1.23.2", false}, {"2.0.0", true}, {"", false}, {"1.x.0", false}} {
		if got := versionAtLeast(c.v, MinVersion); got != c.want {
			t.Errorf("versionAtLeast(%q) = %v", c.v, got)
		}
	}
}

func TestAddComputes(t *testing.T) {
	r := openTest(t)
	m := load(t, r, "testdata", "add.onnx")
	out, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{2, 2}, Data: f32(1, 2, 3, 4)}})
	if err != nil {
		t.Fatal(err)
	}
	if want := f32(11, 22, 13, 24); string(out[0].Data) != string(want) || out[0].Name != "y" {
		t.Fatalf("got %+v", out[0])
	}
	if name, reason := m.(runtime.LoadResult).Provider(); name != "cpu" || reason != "" {
		t.Fatalf("provider %q %q", name, reason)
	}
}

func TestProviderFallback(t *testing.T) {
	r := openTest(t)
	m, err := r.Load(context.Background(), runtime.LoadSpec{Dir: "testdata", Entry: "add.onnx", Providers: []string{"cuda", "tensorrt", "npu9000", "cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	name, reason := m.(runtime.LoadResult).Provider()
	if name != "cpu" {
		t.Fatalf("provider %q, the npm build has no GPU providers", name)
	}
	// This machine's real /proc and /sys decide the first reason: the CI
	// runners have no NVIDIA GPU. (Recorded trees: selection_test.go.)
	for _, want := range []string{"cuda: no usable NVIDIA GPU found", "tensorrt: no usable NVIDIA GPU found", "npu9000: unknown execution provider"} {
		if !strings.Contains(reason, want) {
			t.Errorf("fallback reason %q lacks %q", reason, want)
		}
	}
}

func TestSlotConfinement(t *testing.T) {
	r := openTest(t)
	slot := t.TempDir()
	outside := t.TempDir()
	model, err := os.ReadFile("testdata/add.onnx")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "m.onnx"), model, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "m.onnx"), filepath.Join(slot, "link.onnx")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(slot, "dir.onnx"), 0o755); err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(slot, filepath.Join(outside, "m.onnx"))
	for _, entry := range []string{rel, filepath.Join(outside, "m.onnx"), "link.onnx", "missing.onnx", "dir.onnx", ""} {
		_, err := r.Load(context.Background(), runtime.LoadSpec{Dir: slot, Entry: entry})
		if !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("entry %q: got %v, want ErrInvalidInput", entry, err)
		}
	}
	// Garbage in the slot is refused with an error, not a crash.
	if err := os.WriteFile(filepath.Join(slot, "junk.onnx"), []byte("not a model"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Load(context.Background(), runtime.LoadSpec{Dir: slot, Entry: "junk.onnx"}); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("junk model: %v", err)
	}
	if _, err := r.Load(context.Background(), runtime.LoadSpec{Dir: "testdata", Entry: "add.onnx", Options: map[string]string{"bogus": "1"}}); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Errorf("unknown option: %v", err)
	}
}

func TestBadInputs(t *testing.T) {
	r := openTest(t)
	m := load(t, r, "testdata", "add.onnx")
	ctx := context.Background()
	for name, in := range map[string][]runtime.Tensor{
		"none":       nil,
		"wrong name": {{Name: "z", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32(1, 2)}},
		"wrong type": {{Name: "x", DType: runtime.Float64, Shape: []int64{1, 2}, Data: make([]byte, 16)}},
		"wrong rank": {{Name: "x", DType: runtime.Float32, Shape: []int64{2}, Data: f32(1, 2)}},
		"wrong dim":  {{Name: "x", DType: runtime.Float32, Shape: []int64{1, 3}, Data: f32(1, 2, 3)}},
		"short data": {{Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32(1)}},
		"twice":      {{Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32(1, 2)}, {Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32(1, 2)}},
	} {
		if _, err := m.Infer(ctx, in); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("%s: got %v, want ErrInvalidInput", name, err)
		}
	}
	m.Close()
	if _, err := m.Infer(ctx, []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32(1, 2)}}); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("after close: %v", err)
	}
}
