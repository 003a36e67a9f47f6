package wasinn_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"
	"github.com/flotilla-edge/flotilla/runtime/wasm/wasinn"
)

var (
	guests map[string]string
	// cache is the compilation cache shared by the tests, filled by
	// TestMain outside -race (wazero compiles slowly under -race).
	cache string
	// tmpDir is TestMain's folder, removed at the end.
	tmpDir string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasinn-guests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpDir, cache = dir, filepath.Join(dir, "cache")
	if guests, err = guestbuild.Prepare(dir, cache, "mlp", "nndigits", "nnprobe", "nnforward"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// slotWith makes a slot folder holding the named guests under the given
// file names.
func slotWith(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, src := range files {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// frontend is a wasm runtime whose guests import wasi_ephemeral_nn
// forwarding to backend.
func frontend(t testing.TB, backend runtime.Runtime) *wasm.Runtime {
	t.Helper()
	rt, err := wasm.New(wasm.Config{CacheDir: cache, Instances: 2, HostModules: []wasm.HostModule{wasinn.New(backend, wasinn.Config{})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// wasmBackend is the real runtime/wasm runtime, running the pure-WASM
// mlp model as a wasi-nn graph.
func wasmBackend(t testing.TB) *wasm.Runtime {
	t.Helper()
	rt, err := wasm.New(wasm.Config{CacheDir: cache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func load(t testing.TB, rt runtime.Runtime, spec runtime.LoadSpec) runtime.Model {
	t.Helper()
	m, err := rt.Load(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func f32Tensor(name string, shape []int64, v []float32) runtime.Tensor {
	b := make([]byte, 0, 4*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return runtime.Tensor{Name: name, DType: runtime.Float32, Shape: shape, Data: b}
}

func f32s(b []byte) []float32 {
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}
