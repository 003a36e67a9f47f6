package wasm

import (
	"fmt"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

func fromProto(ps []*flotillapb.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ps))
	for i, p := range ps {
		t := runtime.Tensor{Name: p.Name, DType: runtime.DType(p.Dtype), Shape: p.Shape, Data: p.Data}
		for _, s := range p.Strings {
			t.Strings = append(t.Strings, string(s))
		}
		out[i] = t
	}
	return out
}

func infosFromProto(ps []*flotillapb.TensorInfo) []runtime.TensorInfo {
	out := make([]runtime.TensorInfo, len(ps))
	for i, p := range ps {
		out[i] = runtime.TensorInfo{Name: p.Name, DType: runtime.DType(p.Dtype), Shape: p.Shape}
	}
	return out
}

// validate checks each tensor and, when the model is described, that the
// tensors are exactly the described ones. kind wraps the error
// (runtime.ErrInvalidInput for inputs, ErrBadOutput for outputs).
func validate(ts []runtime.Tensor, want []runtime.TensorInfo, kind error, what string) error {
	for _, t := range ts {
		if err := t.Validate(); err != nil {
			return fmt.Errorf("%w: %s: %w", kind, what, err)
		}
	}
	if want == nil {
		return nil
	}
	if len(ts) != len(want) {
		return fmt.Errorf("%w: %d %ss, the model has %d", kind, len(ts), what, len(want))
	}
	byName := make(map[string]runtime.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	for _, w := range want {
		t, ok := byName[w.Name]
		if !ok {
			return fmt.Errorf("%w: no %s named %q", kind, what, w.Name)
		}
		if !matches(t, w) {
			return fmt.Errorf("%w: %s %q is %v%v, the model wants %v%v", kind, what, w.Name, t.DType, t.Shape, w.DType, w.Shape)
		}
	}
	return nil
}

func matches(t runtime.Tensor, w runtime.TensorInfo) bool {
	if t.DType != w.DType || len(t.Shape) != len(w.Shape) {
		return false
	}
	for i, d := range w.Shape {
		if d >= 0 && t.Shape[i] != d {
			return false
		}
	}
	return true
}
