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
	// pinned holds every buffer handed to the host until it is freed:
	// rarely more than two (a request and a result), so a slice.
	pinned [][]byte
	// spares are freed buffers (at most two), reused for requests and
	// results so that a call allocates little: in a guest every allocation
	// is slow.
	spares [][]byte
)

// Handle registers the function infer calls. The inputs' Data aliases the
// request buffer, which is reused by the next call: a handler that keeps
// input data past its return copies it.
func Handle(h Handler) { handler = h }

// Describe registers the model's inputs and outputs, which the describe
// export returns.
func Describe(inputs, outputs []runtime.TensorInfo) {
	description = abi.AppendDescription(nil, inputs, outputs)
}

func addr(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b)))) }

func pin(b []byte) uint32 {
	if cap(b) == 0 {
		b = make([]byte, 1)[:0:1]
	}
	pinned = append(pinned, b)
	return addr(b)
}

// unpin drops the pinned buffer at p and returns it.
func unpin(p uint32) ([]byte, bool) {
	for i, b := range pinned {
		if addr(b) == p {
			pinned = append(pinned[:i], pinned[i+1:]...)
			return b, true
		}
	}
	return nil, false
}

func pinnedAt(p uint32) ([]byte, bool) {
	for _, b := range pinned {
		if addr(b) == p {
			return b, true
		}
	}
	return nil, false
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
	return int32(pin(spare(int(size))[:size]))
}

// spare returns a spare buffer of at least size bytes, or a new one.
func spare(size int) []byte {
	for i, b := range spares {
		if cap(b) >= size {
			spares = append(spares[:i], spares[i+1:]...)
			return b
		}
	}
	return make([]byte, size)
}

//go:wasmexport free
func free(ptr, _ int32) {
	b, ok := unpin(uint32(ptr))
	if !ok || cap(b) > 16<<20 || addr(b) == addr(description) {
		return // huge buffers go back to the garbage collector
	}
	if len(spares) < 2 {
		spares = append(spares, b[:0])
		return
	}
	if i := smallest(); cap(b) > cap(spares[i]) {
		spares[i] = b[:0]
	}
}

func smallest() int {
	if cap(spares[0]) <= cap(spares[1]) {
		return 0
	}
	return 1
}

//go:wasmexport infer
func infer(ptr, n int32) int64 {
	buf, ok := pinnedAt(uint32(ptr))
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
	size := 0
	for _, t := range out {
		size += len(t.Data) + len(t.Name) + 16*len(t.Shape) + 16
	}
	return int64(result(abi.AppendTensors(spare(size)[:0], out), false))
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
