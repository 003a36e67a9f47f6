package wasm_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"
)

func checkMLP(t testing.TB, m runtime.Model, rows, seed int) {
	t.Helper()
	x := pixels(rows, seed)
	out, err := m.Infer(context.Background(), []runtime.Tensor{f32Tensor("pixels", []int64{int64(rows), 64}, x)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[0].Name != "probabilities" || !slices.Equal(out[0].Shape, []int64{int64(rows), 10}) {
		t.Fatalf("outputs %+v", out)
	}
	got, want := f32s(out[0].Data), mlpReference(x)
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 1e-5 {
			t.Fatalf("output %d = %v, reference %v", i, got[i], want[i])
		}
	}
}

// TestMLPMatchesGo runs the pure-WASM model on both engines and compares
// with an independent Go computation.
func TestMLPMatchesGo(t *testing.T) {
	for _, interp := range []bool{false, true} {
		t.Run(fmt.Sprintf("interpreter=%v", interp), func(t *testing.T) {
			rt := newRuntime(t, wasm.Config{Interpreter: interp})
			if rt.Compiler() == interp {
				t.Fatalf("Compiler() = %v with Interpreter %v", rt.Compiler(), interp)
			}
			m := load(t, rt, slot(t, "mlp"))
			wantIn := []runtime.TensorInfo{{Name: "pixels", DType: runtime.Float32, Shape: []int64{-1, 64}}}
			wantOut := []runtime.TensorInfo{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{-1, 10}}}
			if fmt.Sprint(m.Inputs()) != fmt.Sprint(wantIn) || fmt.Sprint(m.Outputs()) != fmt.Sprint(wantOut) {
				t.Fatalf("described %v -> %v", m.Inputs(), m.Outputs())
			}
			for _, rows := range []int{1, 7, 0} {
				checkMLP(t, m, rows, rows)
			}
		})
	}
}

// TestConcurrentInfer sends many calls through a pool of 3 instances.
func TestConcurrentInfer(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{Instances: 3}), slot(t, "mlp"))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 4 {
				checkMLP(t, m, 1+g%3, g*10+i)
			}
		})
	}
	wg.Wait()
}

func TestInvalidInputsRefused(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{}), slot(t, "mlp"))
	ok := f32Tensor("pixels", []int64{1, 64}, pixels(1, 1))
	for name, in := range map[string][]runtime.Tensor{
		"none":        nil,
		"wrong name":  {f32Tensor("x", []int64{1, 64}, pixels(1, 1))},
		"wrong width": {f32Tensor("pixels", []int64{2, 32}, pixels(1, 1))},
		"wrong rank":  {f32Tensor("pixels", []int64{64}, pixels(1, 1))},
		"short data":  {{Name: "pixels", DType: runtime.Float32, Shape: []int64{1, 64}, Data: ok.Data[:100]}},
		"wrong type":  {{Name: "pixels", DType: runtime.Int32, Shape: []int64{1, 64}, Data: ok.Data}},
		"extra":       {ok, i32Tensor("mode", 1)},
	} {
		if _, err := m.Infer(context.Background(), in); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("%s: err = %v, want ErrInvalidInput", name, err)
		}
	}
	checkMLP(t, m, 2, 2)
}

func TestInferAfterClose(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{}), tinySlot(t, guestbuild.Tiny()))
	m.Close()
	_, err := m.Infer(context.Background(), nil)
	if !errors.Is(err, wasm.ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}
