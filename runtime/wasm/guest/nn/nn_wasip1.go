package nn

import (
	"runtime"
	"unsafe"
)

//go:wasmimport wasi_ephemeral_nn load
func load(builders, n, encoding, target, graph uint32) uint32

//go:wasmimport wasi_ephemeral_nn load_by_name
func loadByName(name, n, graph uint32) uint32

//go:wasmimport wasi_ephemeral_nn init_execution_context
func initExecutionContext(graph, ctx uint32) uint32

//go:wasmimport wasi_ephemeral_nn set_input
func setInput(ctx, index, tensor uint32) uint32

//go:wasmimport wasi_ephemeral_nn compute
func compute(ctx uint32) uint32

//go:wasmimport wasi_ephemeral_nn get_output
func getOutput(ctx, index, out, max, written uint32) uint32

// Pointers cross as uint32 (wasm32 addresses); every call keeps what they
// point to alive.

// tensor is the witx tensor record as laid out in memory (20 bytes).
type tensor struct {
	dims    uint32 // pointer to uint32s
	ndims   uint32
	typ     uint32 // an enum tag u8, padded
	data    uint32
	datalen uint32
}

func ptr[T any](p *T) uint32 { return uint32(uintptr(unsafe.Pointer(p))) }

// Load loads a graph from bytes.
func Load(model []byte, encoding, target uint32) (graph, errno uint32) {
	b := [2]uint32{ptr(unsafe.SliceData(model)), uint32(len(model))}
	errno = load(ptr(&b), 1, encoding, target, ptr(&graph))
	runtime.KeepAlive(model)
	return graph, errno
}

// LoadByName loads the graph the host knows by name (a file of the slot).
func LoadByName(name string) (graph, errno uint32) {
	b := []byte(name)
	graph, errno = LoadByNameAt(ptr(unsafe.SliceData(b)), uint32(len(b)))
	runtime.KeepAlive(b)
	return graph, errno
}

// LoadByNameAt passes a raw pointer and length, for tests of the host.
func LoadByNameAt(namePtr, n uint32) (graph, errno uint32) {
	errno = loadByName(namePtr, n, ptr(&graph))
	return graph, errno
}

// InitExecutionContext makes an execution context for graph.
func InitExecutionContext(graph uint32) (ctx, errno uint32) {
	errno = initExecutionContext(graph, ptr(&ctx))
	return ctx, errno
}

// SetInput sets input index of ctx.
func SetInput(ctx, index uint32, dims []uint32, typ uint32, data []byte) uint32 {
	t := tensor{ptr(unsafe.SliceData(dims)), uint32(len(dims)), typ, ptr(unsafe.SliceData(data)), uint32(len(data))}
	errno := setInput(ctx, index, ptr(&t))
	runtime.KeepAlive(dims)
	runtime.KeepAlive(data)
	return errno
}

// SetInputAt passes a raw tensor pointer, for tests of the host.
func SetInputAt(ctx, index, tensorPtr uint32) uint32 { return setInput(ctx, index, tensorPtr) }

// Compute runs the graph on the inputs set.
func Compute(ctx uint32) uint32 { return compute(ctx) }

// GetOutput copies output index into out and returns the bytes written.
func GetOutput(ctx, index uint32, out []byte) (n, errno uint32) {
	n, errno = GetOutputAt(ctx, index, ptr(unsafe.SliceData(out)), uint32(len(out)))
	runtime.KeepAlive(out)
	return n, errno
}

// GetOutputAt passes a raw buffer pointer, for tests of the host.
func GetOutputAt(ctx, index, outPtr, max uint32) (n, errno uint32) {
	errno = getOutput(ctx, index, outPtr, max, ptr(&n))
	return n, errno
}
