//go:build cgo

package onnx

import (
	"fmt"
	"unsafe"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/flotilla-edge/flotilla/runtime"
)

// toValue makes an ONNX Runtime value of t. Numeric data is not copied:
// the value points into t.Data, which must outlive it.
func toValue(t runtime.Tensor) (ort.Value, error) {
	if t.DType == runtime.String {
		return stringValue(t)
	}
	if len(t.Shape) == 0 {
		return scalarValue(t.DType, t.Data)
	}
	data := t.Data
	if len(data) == 0 {
		// Zero-size: the wrapper wants at least one byte; ONNX Runtime
		// accepts a buffer larger than the (empty) tensor needs.
		data = make([]byte, t.DType.Size())
	}
	v, err := ort.NewCustomDataTensor(ort.NewShape(t.Shape...), data, ort.TensorElementDataType(t.DType))
	if err != nil {
		return nil, fmt.Errorf("%w: onnx: input %q: %w", runtime.ErrInvalidInput, t.Name, err)
	}
	return v, nil
}

func stringValue(t runtime.Tensor) (ort.Value, error) {
	if len(t.Shape) == 0 {
		return nil, fmt.Errorf("%w: onnx: rank-0 string tensor %q (onnxruntime_go cannot make one)", runtime.ErrUnsupported, t.Name)
	}
	v, err := ort.NewStringTensor(ort.NewShape(t.Shape...))
	if err != nil {
		return nil, fmt.Errorf("%w: onnx: input %q: %w", runtime.ErrInvalidInput, t.Name, err)
	}
	if err := v.SetContents(t.Strings); err != nil {
		_ = v.Destroy()
		return nil, fmt.Errorf("%w: onnx: input %q: %w", runtime.ErrInvalidInput, t.Name, err)
	}
	return v, nil
}

// scalarValue makes a rank-0 value: the wrapper's Scalar is the only way to
// a shape with no dimensions, and it exists only for Go's numeric types.
func scalarValue(dt runtime.DType, b []byte) (ort.Value, error) {
	switch dt {
	case runtime.Float32:
		return newScalar[float32](b)
	case runtime.Float64:
		return newScalar[float64](b)
	case runtime.Int8:
		return newScalar[int8](b)
	case runtime.Int16:
		return newScalar[int16](b)
	case runtime.Int32:
		return newScalar[int32](b)
	case runtime.Int64:
		return newScalar[int64](b)
	case runtime.Uint8:
		return newScalar[uint8](b)
	case runtime.Uint16:
		return newScalar[uint16](b)
	case runtime.Uint32:
		return newScalar[uint32](b)
	case runtime.Uint64:
		return newScalar[uint64](b)
	case runtime.Bool:
		return newScalar[bool](b)
	}
	return nil, fmt.Errorf("%w: onnx: rank-0 %v tensor (onnxruntime_go has no scalar of that type)", runtime.ErrUnsupported, dt)
}

func newScalar[T ort.TensorData](b []byte) (ort.Value, error) {
	var v T
	if len(b) != int(unsafe.Sizeof(v)) {
		return nil, fmt.Errorf("%w: onnx: scalar has %d bytes", runtime.ErrInvalidInput, len(b))
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&v)), len(b)), b)
	return ort.NewScalar(v)
}

func newEmptyScalar[T ort.TensorData]() (ort.Value, error) { return ort.NewEmptyScalar[T]() }

// preallocate makes the output value when the model declares a static
// shape, so its bytes land in Go memory we return as is; nil leaves the
// allocation to the wrapper (dynamic shapes).
func preallocate(info runtime.TensorInfo) (ort.Value, error) {
	if info.DType == runtime.String {
		return nil, nil // the wrapper handles strings itself
	}
	n := int64(1)
	for _, d := range info.Shape {
		if d < 0 {
			if info.DType == runtime.Float16 || info.DType == runtime.BFloat16 {
				return nil, fmt.Errorf("%w: onnx: %v output %q with a dynamic shape (onnxruntime_go copies it wrongly)", runtime.ErrUnsupported, info.DType, info.Name)
			}
			return nil, nil
		}
		n *= d
	}
	if len(info.Shape) == 0 {
		return emptyScalar(info)
	}
	size := info.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("%w: onnx: output %q has type %v", runtime.ErrUnsupported, info.Name, info.DType)
	}
	buf := make([]byte, max(n*int64(size), int64(size)))
	v, err := ort.NewCustomDataTensor(ort.NewShape(info.Shape...), buf, ort.TensorElementDataType(info.DType))
	if err != nil {
		return nil, fmt.Errorf("onnx: output %q: %w", info.Name, err)
	}
	return v, nil
}

func emptyScalar(info runtime.TensorInfo) (ort.Value, error) {
	switch info.DType {
	case runtime.Float32:
		return newEmptyScalar[float32]()
	case runtime.Float64:
		return newEmptyScalar[float64]()
	case runtime.Int8:
		return newEmptyScalar[int8]()
	case runtime.Int16:
		return newEmptyScalar[int16]()
	case runtime.Int32:
		return newEmptyScalar[int32]()
	case runtime.Int64:
		return newEmptyScalar[int64]()
	case runtime.Uint8:
		return newEmptyScalar[uint8]()
	case runtime.Uint16:
		return newEmptyScalar[uint16]()
	case runtime.Uint32:
		return newEmptyScalar[uint32]()
	case runtime.Uint64:
		return newEmptyScalar[uint64]()
	case runtime.Bool:
		return newEmptyScalar[bool]()
	}
	return nil, fmt.Errorf("%w: onnx: rank-0 %v output %q (onnxruntime_go has no scalar of that type)", runtime.ErrUnsupported, info.DType, info.Name)
}

// fromValue converts an output value into a Tensor; numeric data is
// reinterpreted as bytes, not copied.
func fromValue(info runtime.TensorInfo, v ort.Value) (runtime.Tensor, error) {
	t := runtime.Tensor{Name: info.Name, DType: runtime.DType(v.DataType()), Shape: []int64(v.GetShape())}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	var err error
	switch x := v.(type) {
	case *ort.CustomDataTensor:
		n, _ := t.Elements()
		t.Data = x.GetData()[:n*int64(t.DType.Size())]
	case *ort.StringTensor:
		t.Strings, err = stringContents(x, len(t.Shape) == 0)
	case *ort.Tensor[float32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[float64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int8]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int16]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[int64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint8]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint16]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint32]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[uint64]:
		t.Data = asBytes(x.GetData())
	case *ort.Tensor[bool]:
		t.Data = asBytes(x.GetData())
	case *ort.Scalar[float32]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[float64]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[int8]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[int16]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[int32]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[int64]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[uint8]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[uint16]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[uint32]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[uint64]:
		t.Data = scalarBytes(x.GetData())
	case *ort.Scalar[bool]:
		t.Data = scalarBytes(x.GetData())
	default:
		return t, fmt.Errorf("%w: onnx: output %q is a %T", runtime.ErrUnsupported, info.Name, v)
	}
	if err != nil {
		return t, fmt.Errorf("onnx: output %q: %w", info.Name, err)
	}
	if t.Data == nil && t.DType != runtime.String {
		t.Data = []byte{}
	}
	return t, t.Validate()
}

func stringContents(x *ort.StringTensor, scalar bool) ([]string, error) {
	if scalar { // GetContents indexes an empty offsets slice for rank 0
		s, err := x.GetElement(0)
		return []string{s}, err
	}
	return x.GetContents()
}

// asBytes views a slice of fixed-size values as its little-endian bytes
// (every platform we build for is little-endian).
func asBytes[T ort.TensorData](s []T) []byte {
	if len(s) == 0 {
		return []byte{}
	}
	var z T
	return unsafe.Slice((*byte)(unsafe.Pointer(&s[0])), len(s)*int(unsafe.Sizeof(z)))
}

func scalarBytes[T ort.TensorData](v T) []byte {
	return append([]byte(nil), unsafe.Slice((*byte)(unsafe.Pointer(&v)), unsafe.Sizeof(v))...)
}
