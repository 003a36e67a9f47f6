package wasm_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/yieldpoint"
)

// nativeMLP is the mlp guest's computation in native Go, float32 with
// precomputed weights, as the baseline of BenchmarkWASMInfer.
type nativeMLP struct{ w1, b1, w2, b2 []float32 }

func newNativeMLP() *nativeMLP {
	w := func(layer, i, j int) float32 { return float32(0.5 * math.Sin(float64(layer*1000+i*37+j*11)*0.1)) }
	layer := func(l, in, out int) (ws, bs []float32) {
		ws, bs = make([]float32, in*out), make([]float32, out)
		for j := range out {
			bs[j] = w(l, -1, j)
			for i := range in {
				ws[i*out+j] = w(l, i, j)
			}
		}
		return ws, bs
	}
	m := &nativeMLP{}
	m.w1, m.b1 = layer(1, 64, 32)
	m.w2, m.b2 = layer(2, 32, 10)
	return m
}

func (m *nativeMLP) infer(x []float32) []float32 {
	rows := len(x) / 64
	out := make([]float32, 0, rows*10)
	h, y := make([]float32, 32), make([]float32, 10)
	dense := func(x, w, b, y []float32) {
		copy(y, b)
		for i, xi := range x {
			for j := range y {
				y[j] += xi * w[i*len(y)+j]
			}
		}
	}
	for r := range rows {
		dense(x[r*64:(r+1)*64], m.w1, m.b1, h)
		for j := range h {
			h[j] = max(h[j], 0)
		}
		dense(h, m.w2, m.b2, y)
		mx := y[0]
		for _, v := range y {
			mx = max(mx, v)
		}
		var sum float32
		for j, v := range y {
			y[j] = float32(math.Exp(float64(v - mx)))
			sum += y[j]
		}
		for j := range y {
			out = append(out, y[j]/sum)
		}
	}
	return out
}

func TestNativeBaselineMatches(t *testing.T) {
	x := pixels(3, 9)
	got, want := newNativeMLP().infer(x), mlpReference(x)
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-5 {
			t.Fatalf("baseline output %d = %v, reference %v", i, got[i], want[i])
		}
	}
}

// BenchmarkWASMInfer compares one inference of the pure-WASM mlp model
// (through Model.Infer: validation, protobuf both ways, a pooled
// instance) with the same computation in native Go.
func BenchmarkWASMInfer(b *testing.B) {
	m := load(b, newRuntime(b, wasm.Config{}), slot(b, "mlp"))
	native := newNativeMLP()
	for _, rows := range []int{1, 64} {
		x := pixels(rows, 1)
		in := []runtime.Tensor{f32Tensor("pixels", []int64{int64(rows), 64}, x)}
		b.Run(fmt.Sprintf("rows=%d/wasm", rows), func(b *testing.B) {
			for b.Loop() {
				if _, err := m.Infer(context.Background(), in); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("rows=%d/native-go", rows), func(b *testing.B) {
			for b.Loop() {
				native.infer(x)
			}
		})
	}
}

// BenchmarkWASMLoad is Load (compile, instantiate, _initialize,
// describe) with an empty compilation cache, then with a filled one.
func BenchmarkWASMLoad(b *testing.B) {
	spec := slot(b, "mlp")
	loadOnce := func(b *testing.B, dir string) {
		rt, err := wasm.New(wasm.Config{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		m, err := rt.Load(context.Background(), spec)
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
		rt.Close()
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			loadOnce(b, b.TempDir())
		}
	})
	b.Run("cached", func(b *testing.B) {
		dir := b.TempDir()
		loadOnce(b, dir)
		for b.Loop() {
			loadOnce(b, dir)
		}
	})
}

// dense is testdata/guests/denseloop's loop, for the native run.
//
//go:noinline
func dense(x, w, b, y []float32) {
	copy(y, b)
	for i, xi := range x {
		row := w[i*len(y) : (i+1)*len(y)]
		for j := range y {
			y[j] += xi * row[j]
		}
	}
}

// BenchmarkComputeLoop runs 1000 times the mlp's first layer (64×32
// multiply-adds), the same Go code natively and compiled to WASM by
// wazero's compiler three ways: with no way to stop it (unsafe: an endless
// loop would hang the call and stall the process's garbage collector),
// with wazero's WithCloseOnContextDone (a trip into Go at every loop
// iteration), and instrumented with yield points as runtime/wasm runs
// guests (a counter at every loop iteration, a trip into Go every 65536).
func BenchmarkComputeLoop(b *testing.B) {
	code, err := os.ReadFile(guests["denseloop"])
	if err != nil {
		b.Fatal(err)
	}
	instrumented, err := yieldpoint.Instrument(code, "flotilla_yield", "yield")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, c := range []struct {
		name        string
		code        []byte
		closeOnDone bool
	}{
		{"wasm-unbounded", code, false},
		{"wasm-wazero-checks", code, true},
		{"wasm-yieldpoints", instrumented, false},
	} {
		r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(c.closeOnDone))
		wasi_snapshot_preview1.MustInstantiate(ctx, r)
		if _, err := r.NewHostModuleBuilder("flotilla_yield").NewFunctionBuilder().
			WithFunc(func(context.Context) {}).Export("yield").Instantiate(ctx); err != nil {
			b.Fatal(err)
		}
		mod, err := r.InstantiateWithConfig(ctx, c.code, wazero.NewModuleConfig().WithStartFunctions("_initialize"))
		if err != nil {
			b.Fatal(err)
		}
		fn := mod.ExportedFunction("dense")
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := fn.Call(ctx, 1000); err != nil {
					b.Fatal(err)
				}
			}
		})
		r.Close(ctx)
	}
	x, w, bias, y := make([]float32, 64), make([]float32, 64*32), make([]float32, 32), make([]float32, 32)
	b.Run("native-go", func(b *testing.B) {
		for b.Loop() {
			for range 1000 {
				dense(x, w, bias, y)
			}
		}
	})
}
