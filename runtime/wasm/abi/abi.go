// Package abi defines Flotilla's WASM reactor ABI, shared by the host
// (runtime/wasm) and by guests (runtime/wasm/guest): the export names, how
// infer's i64 result packs a pointer, a length and an error flag, and a
// small protobuf codec for flotillapb.Tensors that guests use instead of
// the reflection-based proto package (it keeps guests small).
//
// The contract, in the order the host calls it:
//
//	_initialize()                 once, before anything else (Go c-shared reactors need it)
//	describe() -> i64             optional: a serialized flotillapb.LoadResponse whose
//	                              inputs and outputs fields describe the model
//	alloc(size i32) -> ptr i32    a guest buffer the host writes the request into
//	infer(ptr i32, len i32) -> i64
//	free(ptr i32, size i32)       the host frees the request and the result buffers
//
// infer reads a serialized flotillapb.Tensors (the inputs) and returns
// Pack(ptr, len, false) of a serialized flotillapb.Tensors (the outputs) in
// guest memory, or Pack(ptr, len, true) of a UTF-8 error message. Results
// and messages stay valid until the host frees them.
package abi

import "errors"

// Export names.
const (
	ExportInitialize = "_initialize"
	ExportAlloc      = "alloc"
	ExportFree       = "free"
	ExportInfer      = "infer"
	ExportDescribe   = "describe"
	ExportMemory     = "memory"
)

// MaxLen is the largest length a packed result can carry.
const MaxLen = 1<<31 - 1

const errFlag = 1 << 31

// ErrTooLong is returned by Pack for a length above MaxLen.
var ErrTooLong = errors.New("abi: result longer than 2 GiB")

// Pack packs a guest pointer, a length and an error flag into infer's
// result: ptr in the high 32 bits, len in the low 31 bits, the flag in bit
// 31.
func Pack(ptr, n uint32, isErr bool) (uint64, error) {
	if n > MaxLen {
		return 0, ErrTooLong
	}
	r := uint64(ptr)<<32 | uint64(n)
	if isErr {
		r |= errFlag
	}
	return r, nil
}

// Unpack is Pack's inverse.
func Unpack(r uint64) (ptr, n uint32, isErr bool) {
	return uint32(r >> 32), uint32(r) &^ errFlag, uint32(r)&errFlag != 0
}
