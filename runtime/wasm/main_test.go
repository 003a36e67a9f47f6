package wasm_test

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
)

var (
	// guests maps a guest's name to its freshly built .wasm file.
	guests map[string]string
	// sharedCache is the compilation cache of tests that do not test the
	// cache, filled by TestMain outside -race: wazero's compiler under
	// -race takes minutes for one Go guest.
	sharedCache string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "wasm-guests-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	sharedCache = filepath.Join(dir, "cache")
	if guests, err = guestbuild.Prepare(dir, sharedCache, "mlp", "misbehave", "denseloop"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// slot makes a slot folder holding the named guest as model.wasm.
func slot(t testing.TB, guest string) runtime.LoadSpec {
	t.Helper()
	dir := t.TempDir()
	b, err := os.ReadFile(guests[guest])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.wasm"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return runtime.LoadSpec{Dir: dir, Entry: "model.wasm"}
}

// tinySlot makes a slot folder holding code as model.wasm.
func tinySlot(t testing.TB, code []byte) runtime.LoadSpec {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "model.wasm"), code, 0o644); err != nil {
		t.Fatal(err)
	}
	return runtime.LoadSpec{Dir: dir, Entry: "model.wasm"}
}

func newRuntime(t testing.TB, cfg wasm.Config) *wasm.Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = sharedCache
	}
	rt, err := wasm.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func load(t testing.TB, rt *wasm.Runtime, spec runtime.LoadSpec) runtime.Model {
	t.Helper()
	m, err := rt.Load(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// pixels returns rows of 64 deterministic values in [0,1), seeded.
func pixels(rows, seed int) []float32 {
	x := make([]float32, rows*64)
	s := uint32(seed*2654435761 + 1)
	for i := range x {
		s = s*1664525 + 1013904223
		x[i] = float32(s>>8) / (1 << 24)
	}
	return x
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

func i32Tensor(name string, v int32) runtime.Tensor {
	return runtime.Tensor{Name: name, DType: runtime.Int32, Shape: []int64{}, Data: binary.LittleEndian.AppendUint32(nil, uint32(v))}
}
