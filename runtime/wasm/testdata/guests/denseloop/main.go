// Command denseloop is a compute loop for benchmarks, without the reactor
// ABI: its export dense(n) runs the mlp guest's first layer (64×32
// multiply-adds) n times, so BenchmarkComputeLoop can compare the same Go
// code compiled natively and to WASM under each way of bounding it.
package main

import "math"

var w1, b1, x, h []float32

func init() {
	w1, b1, x, h = make([]float32, 64*32), make([]float32, 32), make([]float32, 64), make([]float32, 32)
	for i := range w1 {
		w1[i] = float32(math.Sin(float64(i)))
	}
	for i := range x {
		x[i] = float32(i) / 64
	}
}

// Dense is y = b + x·w, the loop being measured (bench_test.go has the
// same function for the native run).
func Dense(x, w, b, y []float32) {
	copy(y, b)
	for i, xi := range x {
		row := w[i*len(y) : (i+1)*len(y)]
		for j := range y {
			y[j] += xi * row[j]
		}
	}
}

//go:wasmexport dense
func dense(n int32) float32 {
	for range n {
		Dense(x, w1, b1, h)
	}
	return h[0]
}

func main() {}
