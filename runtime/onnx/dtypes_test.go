//go:build cgo

package onnx

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
)

// sample makes a tensor of every element type with recognisable bytes.
func sample(name string, dt runtime.DType, shape []int64) runtime.Tensor {
	t := runtime.Tensor{Name: name, DType: dt, Shape: shape}
	n, _ := t.Elements()
	if dt == runtime.String {
		t.Strings = make([]string, n)
		for i := range t.Strings {
			t.Strings[i] = fmt.Sprintf("s%d-é", i)
		}
		return t
	}
	t.Data = make([]byte, n*int64(dt.Size()))
	for i := range t.Data {
		t.Data[i] = byte(i*7 + 3)
		if dt == runtime.Bool {
			t.Data[i] = byte(i % 2)
		}
	}
	return t
}

var dtypes = []runtime.DType{runtime.Float32, runtime.Uint8, runtime.Int8, runtime.Uint16, runtime.Int16, runtime.Int32,
	runtime.Int64, runtime.String, runtime.Bool, runtime.Float16, runtime.Float64, runtime.Uint32, runtime.Uint64, runtime.BFloat16}

// identityInputs builds one input per dtype for the identity models, except
// those in skip.
func identityInputs(m runtime.Model, shape []int64) []runtime.Tensor {
	var in []runtime.Tensor
	for _, info := range m.Inputs() {
		in = append(in, sample(info.Name, info.DType, shape))
	}
	return in
}

func checkIdentity(t *testing.T, in, out []runtime.Tensor) {
	t.Helper()
	if len(in) != len(out) {
		t.Fatalf("%d outputs for %d inputs", len(out), len(in))
	}
	for i := range in {
		want, got := in[i], out[i]
		if got.Name != "y_"+strings.TrimPrefix(want.Name, "x_") || got.DType != want.DType || !reflect.DeepEqual(got.Shape, want.Shape) ||
			string(got.Data) != string(want.Data) || !reflect.DeepEqual(got.Strings, want.Strings) {
			t.Errorf("%v: got %s %v%v %x %q, want %v%v %x %q", want.DType, got.Name, got.DType, got.Shape, got.Data, got.Strings, want.DType, want.Shape, want.Data, want.Strings)
		}
	}
}

func TestEveryDType(t *testing.T) {
	r := openTest(t)
	ctx := context.Background()
	t.Run("static", func(t *testing.T) {
		m := load(t, r, "testdata", "identity_static.onnx")
		if len(m.Inputs()) != len(dtypes) {
			t.Fatalf("%d inputs", len(m.Inputs()))
		}
		in := identityInputs(m, []int64{2, 3})
		out, err := m.Infer(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		checkIdentity(t, in, out)
	})
	t.Run("zero-size static", func(t *testing.T) {
		m := load(t, r, "testdata", "identity_zero.onnx")
		in := identityInputs(m, []int64{0, 3})
		out, err := m.Infer(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		checkIdentity(t, in, out)
	})
	t.Run("dynamic", func(t *testing.T) {
		m := load(t, r, "testdata", "identity_dynamic.onnx")
		_, err := m.Infer(ctx, identityInputs(m, []int64{5}))
		// The wrapper copies float16 and bfloat16 outputs it allocates with
		// too few bytes: refused up front, clearly.
		if !errors.Is(err, runtime.ErrUnsupported) || !strings.Contains(err.Error(), "float16") {
			t.Fatalf("dynamic float16 output: got %v, want ErrUnsupported", err)
		}
	})
}

// TestDynamicDTypes runs every dtype but the 16-bit floats with a dynamic
// dimension, non-empty and zero-size: outputs the wrapper allocates.
func TestDynamicDTypes(t *testing.T) {
	r := openTest(t)
	for _, dt := range dtypes {
		if dt == runtime.Float16 || dt == runtime.BFloat16 {
			continue
		}
		for _, n := range []int64{5, 0} {
			t.Run(fmt.Sprintf("%v[%d]", dt, n), func(t *testing.T) {
				dir := t.TempDir()
				writeIdentity(t, dir, dt, []int64{-1})
				m := load(t, r, dir, "m.onnx")
				in := []runtime.Tensor{sample("x_"+dt.String(), dt, []int64{n})}
				out, err := m.Infer(context.Background(), in)
				if err != nil {
					t.Fatal(err)
				}
				checkIdentity(t, in, out)
			})
		}
	}
}

func TestRankZero(t *testing.T) {
	r := openTest(t)
	for _, dt := range dtypes {
		t.Run(dt.String(), func(t *testing.T) {
			dir := t.TempDir()
			writeIdentity(t, dir, dt, []int64{})
			m := load(t, r, dir, "m.onnx")
			in := []runtime.Tensor{sample("x_"+dt.String(), dt, []int64{})}
			out, err := m.Infer(context.Background(), in)
			switch dt {
			case runtime.Float16, runtime.BFloat16, runtime.String:
				if !errors.Is(err, runtime.ErrUnsupported) {
					t.Fatalf("got %v, want ErrUnsupported", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkIdentity(t, in, out)
		})
	}
}

func TestNoInputs(t *testing.T) {
	r := openTest(t)
	m := load(t, r, "testdata", "constant.onnx")
	if len(m.Inputs()) != 0 {
		t.Fatalf("inputs %v", m.Inputs())
	}
	for range 2 {
		out, err := m.Infer(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 2 || string(out[0].Data) != string(f32(1.5, -2)) || len(out[1].Shape) != 0 || string(out[1].Data) != string(f32(7)) {
			t.Fatalf("got %+v", out)
		}
	}
	if _, err := m.Infer(context.Background(), []runtime.Tensor{sample("x", runtime.Float32, []int64{1})}); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Fatalf("input to a model with none: %v", err)
	}
}
