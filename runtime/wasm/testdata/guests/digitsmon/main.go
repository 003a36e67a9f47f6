// Command digitsmon is a monitor function (runtime/wasm/monitorfn) for the
// digits model: it maps one 8×8 image (64 float32 pixels in [0, 1],
// little-endian) to four features an image's drift shows in, where no
// single pixel means much:
//
//	0 mean intensity
//	1 ink fraction: the share of pixels above 0.5
//	2 centre of mass x (0..7, intensity-weighted column; 3.5 for a blank image)
//	3 centre of mass y (the same for rows)
//
// It returns -1 for an input that is not 256 bytes and -2 when the host
// offers room for fewer than four results.
package main

import (
	"encoding/binary"
	"math"
)

const (
	side     = 8
	pixels   = side * side
	features = 4
)

// buf is the one buffer the host asks for (alloc), kept for the
// instance's life: the host writes inputs into it and reads results from
// it.
var (
	buf  []byte
	base uintptr
)

//go:wasmexport alloc
func alloc(size int32) int32 {
	buf = make([]byte, size)
	base = addr(buf)
	return int32(base)
}

//go:wasmexport features
func monitor(inPtr, inLen, outPtr, outCap int32) int32 {
	in, ok := view(inPtr, inLen)
	if !ok || inLen != 4*pixels {
		return -1
	}
	out, ok := view(outPtr, 8*outCap)
	if !ok || outCap < features {
		return -2
	}
	var sum, ink, mx, my float64
	for i := range pixels {
		v := float64(math.Float32frombits(binary.LittleEndian.Uint32(in[4*i:])))
		sum += v
		if v > 0.5 {
			ink++
		}
		mx += v * float64(i%side)
		my += v * float64(i/side)
	}
	cx, cy := 3.5, 3.5
	if sum > 0 {
		cx, cy = mx/sum, my/sum
	}
	for i, f := range [features]float64{sum / pixels, ink / pixels, cx, cy} {
		binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(f))
	}
	return features
}

// view is [ptr, ptr+n) of buf, the only memory the host points into.
func view(ptr, n int32) ([]byte, bool) {
	off := uintptr(ptr) - base
	if ptr < 0 || n < 0 || off > uintptr(len(buf)) || uintptr(n) > uintptr(len(buf))-off {
		return nil, false
	}
	return buf[off : off+uintptr(n)], true
}

func main() {}
