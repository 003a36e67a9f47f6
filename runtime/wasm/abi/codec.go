package abi

import (
	"errors"
	"fmt"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Field numbers of proto/flotilla/v1/runtime.proto.
const (
	fieldTensors = 1 // Tensors.tensors

	fieldName    = 1 // Tensor.name, TensorInfo.name
	fieldDType   = 2 // Tensor.dtype, TensorInfo.dtype
	fieldShape   = 3 // Tensor.shape, TensorInfo.shape
	fieldData    = 4 // Tensor.data
	fieldStrings = 5 // Tensor.strings

	fieldInputs  = 2 // LoadResponse.inputs
	fieldOutputs = 3 // LoadResponse.outputs
)

// ErrMalformed is returned for bytes that are not the expected message.
var ErrMalformed = errors.New("abi: malformed message")

// AppendTensors appends ts encoded as a flotillapb.Tensors. It sizes each
// tensor's message first and writes it in place: no buffer per tensor,
// which matters in a guest, where every allocation is slow.
func AppendTensors(b []byte, ts []runtime.Tensor) []byte {
	for _, t := range ts {
		b = protowire.AppendTag(b, fieldTensors, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(tensorSize(t)))
		b = appendString(b, fieldName, t.Name)
		b = appendVarint(b, fieldDType, uint64(int64(t.DType)))
		b = appendShape(b, t.Shape)
		if len(t.Data) > 0 {
			b = protowire.AppendTag(b, fieldData, protowire.BytesType)
			b = protowire.AppendBytes(b, t.Data)
		}
		for _, s := range t.Strings {
			b = protowire.AppendTag(b, fieldStrings, protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	return b
}

// TensorsSize is the length of AppendTensors(nil, ts).
func TensorsSize(ts []runtime.Tensor) int {
	n := 0
	for _, t := range ts {
		m := tensorSize(t)
		n += 1 + protowire.SizeBytes(m)
	}
	return n
}

// tensorSize is the encoded size of one Tensor message's fields.
func tensorSize(t runtime.Tensor) int {
	n := 0
	if t.Name != "" {
		n += 1 + protowire.SizeBytes(len(t.Name))
	}
	if t.DType != 0 {
		n += 1 + protowire.SizeVarint(uint64(int64(t.DType)))
	}
	if len(t.Shape) > 0 {
		n += 1 + protowire.SizeBytes(shapeSize(t.Shape))
	}
	if len(t.Data) > 0 {
		n += 1 + protowire.SizeBytes(len(t.Data))
	}
	for _, s := range t.Strings {
		n += 1 + protowire.SizeBytes(len(s))
	}
	return n
}

func shapeSize(shape []int64) int {
	n := 0
	for _, d := range shape {
		n += protowire.SizeVarint(uint64(d))
	}
	return n
}

// AppendDescription appends inputs and outputs encoded as a
// flotillapb.LoadResponse (only its inputs and outputs fields).
func AppendDescription(b []byte, inputs, outputs []runtime.TensorInfo) []byte {
	for _, list := range []struct {
		field protowire.Number
		infos []runtime.TensorInfo
	}{{fieldInputs, inputs}, {fieldOutputs, outputs}} {
		for _, ti := range list.infos {
			var m []byte
			m = appendString(m, fieldName, ti.Name)
			m = appendVarint(m, fieldDType, uint64(int64(ti.DType)))
			m = appendShape(m, ti.Shape)
			b = protowire.AppendTag(b, list.field, protowire.BytesType)
			b = protowire.AppendBytes(b, m)
		}
	}
	return b
}

// DecodeTensors decodes a flotillapb.Tensors. Unknown fields are skipped.
// Data aliases b.
func DecodeTensors(b []byte) ([]runtime.Tensor, error) {
	var ts []runtime.Tensor
	for len(b) > 0 {
		num, typ, v, _, rest, err := nextField(b)
		if err != nil {
			return nil, err
		}
		b = rest
		if num != fieldTensors {
			continue
		}
		if typ != protowire.BytesType {
			return nil, fmt.Errorf("%w: tensors field has wire type %d", ErrMalformed, typ)
		}
		t, err := decodeTensor(v)
		if err != nil {
			return nil, err
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func decodeTensor(b []byte) (runtime.Tensor, error) {
	var t runtime.Tensor
	for len(b) > 0 {
		num, typ, v, x, rest, err := nextField(b)
		if err != nil {
			return t, err
		}
		b = rest
		switch {
		case num == fieldName && typ == protowire.BytesType:
			t.Name = string(v)
		case num == fieldDType && typ == protowire.VarintType:
			t.DType = runtime.DType(int32(x))
		case num == fieldShape:
			if t.Shape, err = decodeShape(t.Shape, typ, v, x); err != nil {
				return t, err
			}
		case num == fieldData && typ == protowire.BytesType:
			t.Data = v
		case num == fieldStrings && typ == protowire.BytesType:
			t.Strings = append(t.Strings, string(v))
		case num <= fieldStrings:
			return t, fmt.Errorf("%w: tensor field %d has wire type %d", ErrMalformed, num, typ)
		}
	}
	return t, nil
}

// decodeShape appends to dims one unpacked dimension (x) or a packed run
// of them (v), allocating once for a packed run.
func decodeShape(dims []int64, typ protowire.Type, v []byte, x uint64) ([]int64, error) {
	if typ == protowire.VarintType {
		return append(dims, int64(x)), nil
	}
	if typ != protowire.BytesType {
		return nil, fmt.Errorf("%w: shape has wire type %d", ErrMalformed, typ)
	}
	n := 0
	for _, c := range v {
		if c < 0x80 {
			n++
		}
	}
	dims = slices.Grow(dims, n)
	for len(v) > 0 {
		d, k := protowire.ConsumeVarint(v)
		if k < 0 {
			return nil, fmt.Errorf("%w: shape: %v", ErrMalformed, protowire.ParseError(k))
		}
		dims = append(dims, int64(d))
		v = v[k:]
	}
	return dims, nil
}

// nextField reads the first field of b: v holds a bytes field's value, x a
// varint's; rest is what follows.
func nextField(b []byte) (num protowire.Number, typ protowire.Type, v []byte, x uint64, rest []byte, err error) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 {
		return 0, 0, nil, 0, nil, fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(n))
	}
	b = b[n:]
	switch typ {
	case protowire.BytesType:
		v, n = protowire.ConsumeBytes(b)
	case protowire.VarintType:
		x, n = protowire.ConsumeVarint(b)
	default:
		n = protowire.ConsumeFieldValue(num, typ, b)
	}
	if n < 0 {
		return 0, 0, nil, 0, nil, fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
	}
	return num, typ, v, x, b[n:], nil
}

func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func appendShape(b []byte, shape []int64) []byte {
	if len(shape) == 0 {
		return b
	}
	b = protowire.AppendTag(b, fieldShape, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(shapeSize(shape)))
	for _, d := range shape {
		b = protowire.AppendVarint(b, uint64(d))
	}
	return b
}
