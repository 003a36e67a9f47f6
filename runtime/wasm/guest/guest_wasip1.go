package guest

import (
	"errors"
	"unsafe"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/abi"
)

// Handler computes a model's outputs from its inputs.
type Handler func(inputs []runtime.Tensor) ([]runtime.Tensor, error)

var (
	handler     Handler
	description []byte
	// pinned keeps every buffer handed to the host alive until it is freed.
	pinned = map[uint32][]byte{}
)

// Handle registers the function infer calls.
func Handle(h Handler) { handler = h }

// Describe registers the model's inputs and outputs, which the describe
// export returns.
func Describe(inputs, outputs []runtime.TensorInfo) {
	description = abi.AppendDescription(nil, inputs, outputs)
}

func pin(b []byte) uint32 {
	if len(b) == 0 {
		b = make([]byte, 1)[:0:1]
	}
	p := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	pinned[p] = b
	return p
}

func result(b []byte, isErr bool) uint64 {
	r, err := abi.Pack(pin(b), uint32(min(len(b), abi.MaxLen)), isErr)
	if err != nil {
		msg := []byte(err.Error())
		r, _ = abi.Pack(pin(msg), uint32(len(msg)), true)
	}
	return r
}

//go:wasmexport alloc
func alloc(size int32) int32 {
	if size < 0 {
		return 0
	}
	return int32(pin(make([]byte, size)))
}

//go:wasmexport free
func free(ptr, _ int32) {
	delete(pinned, uint32(ptr))
}

//go:wasmexport infer
func infer(ptr, n int32) int64 {
	buf, ok := pinned[uint32(ptr)]
	if !ok || n < 0 || int(n) > cap(buf) {
		return int64(result([]byte("guest: infer: request buffer was not allocated by alloc"), true))
	}
	if handler == nil {
		return int64(result([]byte("guest: no handler registered"), true))
	}
	in, err := abi.DecodeTensors(buf[:n:n])
	if err != nil {
		return int64(result([]byte("guest: "+err.Error()), true))
	}
	out, err := call(in)
	if err != nil {
		return int64(result([]byte(err.Error()), true))
	}
	return int64(result(abi.AppendTensors(nil, out), false))
}

// call runs the handler, turning a panic into an error so one bad request
// does not kill the instance.
func call(in []runtime.Tensor) (out []runtime.Tensor, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, errors.New("guest: panic: "+panicString(r))
		}
	}()
	return handler(in)
}

func panicString(r any) string {
	switch v := r.(type) {
	case error:
		return v.Error()
	case string:
		return v
	}
	return "non-error value"
}

//go:wasmexport describe
func describe() int64 {
	return int64(result(description, false))
}
