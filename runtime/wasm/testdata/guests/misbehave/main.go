// Command misbehave is a guest that breaks the reactor ABI on request, for
// tests of the host's defences. It implements the ABI by hand (not with
// package guest) so it can return anything. Its one input is an int32
// tensor named "mode":
//
//	0 echo the inputs          4 return bytes that are not protobuf
//	1 loop forever             5 return an error message
//	2 allocate without bound   6 claim a 2 GiB result
//	3 return a wild pointer    7 panic (the instance dies)
//	8 return a tensor whose data does not match its shape
package main

import (
	"encoding/binary"
	"unsafe"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/abi"
)

var (
	pinned = map[uint32][]byte{}
	hoard  [][]byte
	spin   int
)

func pin(b []byte) uint32 {
	b = append(b[:len(b):len(b)], 0)
	p := uint32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
	pinned[p] = b
	return p
}

func pack(b []byte, isErr bool) int64 {
	r, _ := abi.Pack(pin(b), uint32(len(b)), isErr)
	return int64(r)
}

//go:wasmexport alloc
func alloc(size int32) int32 { return int32(pin(make([]byte, size))) }

//go:wasmexport free
func free(ptr, _ int32) { delete(pinned, uint32(ptr)) }

//go:wasmexport infer
func infer(ptr, n int32) int64 {
	in, err := abi.DecodeTensors(pinned[uint32(ptr)][:n])
	if err != nil {
		return pack([]byte(err.Error()), true)
	}
	mode := uint32(0)
	for _, t := range in {
		if t.Name == "mode" && len(t.Data) == 4 {
			mode = binary.LittleEndian.Uint32(t.Data)
		}
	}
	switch mode {
	case 1:
		for {
			spin++
		}
	case 2:
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case 3:
		r, _ := abi.Pack(0xfff00000, 4096, false)
		return int64(r)
	case 4:
		return pack([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, false)
	case 5:
		return pack([]byte("misbehave: the guest refuses"), true)
	case 6:
		r, _ := abi.Pack(pin([]byte{1}), abi.MaxLen, false)
		return int64(r)
	case 7:
		panic("misbehave: asked to panic")
	case 8:
		bad := runtime.Tensor{Name: "bad", DType: runtime.Float32, Shape: []int64{4}, Data: []byte{1, 2, 3}}
		return pack(abi.AppendTensors(nil, []runtime.Tensor{bad}), false)
	}
	return pack(abi.AppendTensors(nil, in), false)
}

func main() {}
