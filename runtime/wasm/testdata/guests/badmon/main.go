// Command badmon is a monitor function that misbehaves on request, for
// tests of the host's defences (runtime/wasm/monitorfn). The first byte of
// its input picks what it does:
//
//	0 return one feature (the input's length)   4 allocate without bound
//	1 loop forever                              5 panic (the instance dies)
//	2 claim more results than out_cap
//	3 return a negative error code
package main

import (
	"encoding/binary"
	"math"
	"unsafe"
)

var (
	buf   []byte
	base  uintptr
	spin  int
	hoard [][]byte
)

//go:wasmexport alloc
func alloc(size int32) int32 {
	buf = make([]byte, size)
	base = uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return int32(base)
}

//go:wasmexport features
func monitor(inPtr, inLen, outPtr, outCap int32) int32 {
	if inLen < 1 {
		return -1
	}
	in := buf[uintptr(inPtr)-base:][:inLen]
	switch in[0] {
	case 1:
		for {
			spin++
		}
	case 2:
		return outCap + 1
	case 3:
		return -7
	case 4:
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	case 5:
		panic("badmon: asked to panic")
	}
	out := buf[uintptr(outPtr)-base:][:8]
	binary.LittleEndian.PutUint64(out, math.Float64bits(float64(inLen)))
	return 1
}

func main() {}
