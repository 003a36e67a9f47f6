package abi

import (
	"errors"
	"fmt"

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

// AppendTensors appends ts encoded as a flotillapb.Tensors.
func AppendTensors(b []byte, ts []runtime.Tensor) []byte {
	for _, t := range ts {
		var m []byte
		m = appendString(m, fieldName, t.Name)
		m = appendVarint(m, fieldDType, uint64(int64(t.DType)))
		m = appendShape(m, t.Shape)
		if len(t.Data) > 0 {
			m = protowire.AppendTag(m, fieldData, protowire.BytesType)
			m = protowire.AppendBytes(m, t.Data)
		}
		for _, s := range t.Strings {
			m = protowire.AppendTag(m, fieldStrings, protowire.BytesType)
			m = protowire.AppendString(m, s)
		}
		b = protowire.AppendTag(b, fieldTensors, protowire.BytesType)
		b = protowire.AppendBytes(b, m)
	}
	return b
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
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num != fieldTensors {
			return nil
		}
		if typ != protowire.BytesType {
			return fmt.Errorf("%w: tensors field has wire type %d", ErrMalformed, typ)
		}
		t, err := decodeTensor(v)
		if err != nil {
			return err
		}
		ts = append(ts, t)
		return nil
	})
	return ts, err
}

func decodeTensor(b []byte) (runtime.Tensor, error) {
	var t runtime.Tensor
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fieldName && typ == protowire.BytesType:
			t.Name = string(v)
		case num == fieldDType && typ == protowire.VarintType:
			t.DType = runtime.DType(int32(x))
		case num == fieldShape:
			dims, err := decodeShape(typ, v, x)
			if err != nil {
				return err
			}
			t.Shape = append(t.Shape, dims...)
		case num == fieldData && typ == protowire.BytesType:
			t.Data = v
		case num == fieldStrings && typ == protowire.BytesType:
			t.Strings = append(t.Strings, string(v))
		case num <= fieldStrings:
			return fmt.Errorf("%w: tensor field %d has wire type %d", ErrMalformed, num, typ)
		}
		return nil
	})
	return t, err
}

func decodeShape(typ protowire.Type, v []byte, x uint64) ([]int64, error) {
	if typ == protowire.VarintType {
		return []int64{int64(x)}, nil
	}
	if typ != protowire.BytesType {
		return nil, fmt.Errorf("%w: shape has wire type %d", ErrMalformed, typ)
	}
	var dims []int64
	for len(v) > 0 {
		d, n := protowire.ConsumeVarint(v)
		if n < 0 {
			return nil, fmt.Errorf("%w: shape: %v", ErrMalformed, protowire.ParseError(n))
		}
		dims = append(dims, int64(d))
		v = v[n:]
	}
	return dims, nil
}

// eachField calls f for every field of message b: v holds a bytes field's
// value, x a varint's.
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %v", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %v", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := f(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
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
	var packed []byte
	for _, d := range shape {
		packed = protowire.AppendVarint(packed, uint64(d))
	}
	b = protowire.AppendTag(b, fieldShape, protowire.BytesType)
	return protowire.AppendBytes(b, packed)
}
