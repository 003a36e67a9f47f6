// Package runtime declares the one small interface every inference runtime
// implements — load a model from a slot, describe its inputs and outputs,
// infer, close — and the tensor types that cross it.
//
// Implementations live in sub-packages: runtime/wasm (wazero, in process)
// and runtime/native (ONNX Runtime in a go-plugin process). Optional
// abilities are one-method interfaces found by type assertion (Describer),
// so a runtime implements only what it can.
package runtime

import (
	"context"
	"errors"
	"fmt"
)

// Runtime loads models. It is safe for concurrent use.
type Runtime interface {
	// Name is the runtime's name as bundles name it: "onnx", "wasm".
	Name() string
	// Load loads the model described by spec.
	Load(ctx context.Context, spec LoadSpec) (Model, error)
	// Close releases the runtime; models it loaded stop working.
	Close() error
}

// Model is one loaded model. Infer is safe for concurrent use.
type Model interface {
	Inputs() []TensorInfo
	Outputs() []TensorInfo
	Infer(ctx context.Context, inputs []Tensor) ([]Tensor, error)
	Close() error
}

// Describer is implemented by runtimes that report what they are and what
// hardware they can use.
type Describer interface {
	Describe() Info
}

// Info describes a runtime to the control plane (device facts) and to
// field engineers (diag).
type Info struct {
	Name               string
	Version            string
	ExecutionProviders []string // available, best first; "cpu" always last
}

// LoadSpec says what to load.
type LoadSpec struct {
	// Dir is the model's slot folder; Entry is the file to load, relative
	// to Dir. A runtime must not read outside Dir.
	Dir   string
	Entry string
	// Providers are the execution providers the bundle variant asks for,
	// best first (e.g. "cuda", "cpu"); empty means the runtime's default.
	Providers []string
	// Options are runtime-specific settings from the bundle variant.
	Options map[string]string
}

// LoadResult reports which provider a load ended up on, and why it fell
// back, for models that implement it.
type LoadResult interface {
	Provider() (name, fallbackReason string)
}

// Errors callers branch on with errors.Is.
var (
	ErrInvalidInput = errors.New("invalid input")
	ErrUnavailable  = errors.New("runtime unavailable") // e.g. its plugin process is restarting
	ErrUnsupported  = errors.New("unsupported")
)

// DType is a tensor element type, numbered as ONNX's TensorProto.DataType.
type DType int32

// The element types, with ONNX's numbers.
const (
	Undefined DType = 0
	Float32   DType = 1
	Uint8     DType = 2
	Int8      DType = 3
	Uint16    DType = 4
	Int16     DType = 5
	Int32     DType = 6
	Int64     DType = 7
	String    DType = 8
	Bool      DType = 9
	Float16   DType = 10
	Float64   DType = 11
	Uint32    DType = 12
	Uint64    DType = 13
	BFloat16  DType = 16
)

var dtypeNames = map[DType]string{
	Float32: "float32", Uint8: "uint8", Int8: "int8", Uint16: "uint16", Int16: "int16",
	Int32: "int32", Int64: "int64", String: "string", Bool: "bool", Float16: "float16",
	Float64: "float64", Uint32: "uint32", Uint64: "uint64", BFloat16: "bfloat16",
}

func (d DType) String() string {
	if n, ok := dtypeNames[d]; ok {
		return n
	}
	return fmt.Sprintf("DType(%d)", int32(d))
}

// Size is the byte size of one element; 0 for String and unknown types.
func (d DType) Size() int {
	switch d {
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16, Float16, BFloat16:
		return 2
	case Float32, Int32, Uint32:
		return 4
	case Float64, Int64, Uint64:
		return 8
	}
	return 0
}

// TensorInfo describes a model input or output. A dimension of -1 is
// dynamic.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
}

// Tensor is a named value. Numeric data is raw little-endian bytes in
// row-major order; strings are in Strings. A rank-0 tensor has an empty
// Shape and one element; a zero-size tensor has a 0 in its Shape and no
// data.
type Tensor struct {
	Name    string
	DType   DType
	Shape   []int64
	Data    []byte
	Strings []string
}

// Elements is the number of elements Shape holds.
func (t Tensor) Elements() (int64, error) {
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: tensor %q has negative dimension %d", ErrInvalidInput, t.Name, d)
		}
		if d != 0 && n > (1<<62)/d {
			return 0, fmt.Errorf("%w: tensor %q shape %v overflows", ErrInvalidInput, t.Name, t.Shape)
		}
		n *= d
	}
	return n, nil
}

// Validate checks that the data matches the type and shape.
func (t Tensor) Validate() error {
	n, err := t.Elements()
	if err != nil {
		return err
	}
	if t.DType == String {
		if int64(len(t.Strings)) != n || len(t.Data) != 0 {
			return fmt.Errorf("%w: string tensor %q has %d strings for shape %v", ErrInvalidInput, t.Name, len(t.Strings), t.Shape)
		}
		return nil
	}
	size := t.DType.Size()
	if size == 0 {
		return fmt.Errorf("%w: tensor %q has unsupported type %v", ErrUnsupported, t.Name, t.DType)
	}
	if int64(len(t.Data)) != n*int64(size) || len(t.Strings) != 0 {
		return fmt.Errorf("%w: tensor %q of %v%v needs %d bytes, has %d", ErrInvalidInput, t.Name, t.DType, t.Shape, n*int64(size), len(t.Data))
	}
	return nil
}
