package lifecycle

import (
	"encoding/binary"
	"fmt"
	"math"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// fromProto converts manifest tensors (golden inputs and outputs).
func fromProto(ps []*pb.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ps))
	for i, p := range ps {
		t := runtime.Tensor{Name: p.GetName(), DType: runtime.DType(p.GetDtype()), Shape: p.GetShape(), Data: p.GetData()}
		for _, s := range p.GetStrings() {
			t.Strings = append(t.Strings, string(s))
		}
		out[i] = t
	}
	return out
}

func infosFromProto(ps []*pb.TensorInfo) []runtime.TensorInfo {
	out := make([]runtime.TensorInfo, len(ps))
	for i, p := range ps {
		out[i] = runtime.TensorInfo{Name: p.GetName(), DType: runtime.DType(p.GetDtype()), Shape: p.GetShape()}
	}
	return out
}

// values decodes a numeric tensor's elements as float64.
func values(t runtime.Tensor) ([]float64, error) {
	size := t.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("tensor %q: %v is not numeric", t.Name, t.DType)
	}
	if len(t.Data)%size != 0 {
		return nil, fmt.Errorf("tensor %q: %d bytes is not a whole number of %v", t.Name, len(t.Data), t.DType)
	}
	n := len(t.Data) / size
	out := make([]float64, n)
	le := binary.LittleEndian
	for i := range n {
		b := t.Data[i*size:]
		var v float64
		switch t.DType {
		case runtime.Float32:
			v = float64(math.Float32frombits(le.Uint32(b)))
		case runtime.Float64:
			v = math.Float64frombits(le.Uint64(b))
		case runtime.Float16:
			v = float64(halfToFloat(le.Uint16(b)))
		case runtime.BFloat16:
			v = float64(math.Float32frombits(uint32(le.Uint16(b)) << 16))
		case runtime.Int8:
			v = float64(int8(b[0]))
		case runtime.Uint8, runtime.Bool:
			v = float64(b[0])
		case runtime.Int16:
			v = float64(int16(le.Uint16(b)))
		case runtime.Uint16:
			v = float64(le.Uint16(b))
		case runtime.Int32:
			v = float64(int32(le.Uint32(b)))
		case runtime.Uint32:
			v = float64(le.Uint32(b))
		case runtime.Int64:
			v = float64(int64(le.Uint64(b)))
		case runtime.Uint64:
			v = float64(le.Uint64(b))
		}
		out[i] = v
	}
	return out, nil
}

// halfToFloat converts an IEEE 754 binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

// Tolerance is how far an output may be from the expected one:
// |got-want| <= Abs + Rel*|want|.
type Tolerance struct{ Abs, Rel float64 }

// compare checks got against want: same name, type, shape and every
// element within tol (strings equal). It names the first difference.
func compare(got, want runtime.Tensor, tol Tolerance) error {
	if got.DType != want.DType {
		return fmt.Errorf("output %q is %v, want %v", want.Name, got.DType, want.DType)
	}
	if !sameShape(got.Shape, want.Shape) {
		return fmt.Errorf("output %q has shape %v, want %v", want.Name, got.Shape, want.Shape)
	}
	if want.DType == runtime.String {
		if len(got.Strings) != len(want.Strings) {
			return fmt.Errorf("output %q has %d strings, want %d", want.Name, len(got.Strings), len(want.Strings))
		}
		for i := range want.Strings {
			if got.Strings[i] != want.Strings[i] {
				return fmt.Errorf("output %q element %d is %q, want %q", want.Name, i, got.Strings[i], want.Strings[i])
			}
		}
		return nil
	}
	g, err := values(got)
	if err != nil {
		return err
	}
	w, err := values(want)
	if err != nil {
		return err
	}
	if len(g) != len(w) {
		return fmt.Errorf("output %q has %d elements, want %d", want.Name, len(g), len(w))
	}
	for i := range w {
		if math.IsNaN(w[i]) && math.IsNaN(g[i]) {
			continue
		}
		if !(math.Abs(g[i]-w[i]) <= tol.Abs+tol.Rel*math.Abs(w[i])) {
			return fmt.Errorf("output %q element %d is %g, want %g (abs %g, rel %g)", want.Name, i, g[i], w[i], tol.Abs, tol.Rel)
		}
	}
	return nil
}

// compareAll matches outputs to expected ones by name.
func compareAll(got, want []runtime.Tensor, tol Tolerance) error {
	byName := make(map[string]runtime.Tensor, len(got))
	for _, t := range got {
		byName[t.Name] = t
	}
	for _, w := range want {
		g, ok := byName[w.Name]
		if !ok {
			return fmt.Errorf("output %q is missing", w.Name)
		}
		if err := compare(g, w, tol); err != nil {
			return err
		}
	}
	return nil
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
