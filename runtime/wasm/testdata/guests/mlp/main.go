// Command mlp is a pure-WASM model for tests and benchmarks: a fixed
// two-layer perceptron (64 inputs, 32 ReLU units, 10 softmax outputs) with
// the digits model's input and output names. Its weights follow a formula
// (see weight) so a test can compute the same outputs independently.
package main

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/guest"
)

const (
	nIn     = 64
	nHidden = 32
	nOut    = 10
)

// weight is the formula every weight and bias follows: layer 1 or 2, row
// i, column j (bias: i = -1).
func weight(layer, i, j int) float32 {
	return float32(0.5 * math.Sin(float64(layer*1000+i*37+j*11)*0.1))
}

var w1, b1, w2, b2 []float32

func init() {
	w1, b1 = layer(1, nIn, nHidden)
	w2, b2 = layer(2, nHidden, nOut)
	guest.Describe(
		[]runtime.TensorInfo{{Name: "pixels", DType: runtime.Float32, Shape: []int64{-1, nIn}}},
		[]runtime.TensorInfo{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{-1, nOut}}},
	)
	guest.Handle(infer)
}

func layer(l, in, out int) (w, b []float32) {
	w, b = make([]float32, in*out), make([]float32, out)
	for j := range out {
		b[j] = weight(l, -1, j)
		for i := range in {
			w[i*out+j] = weight(l, i, j)
		}
	}
	return w, b
}

func infer(in []runtime.Tensor) ([]runtime.Tensor, error) {
	if len(in) != 1 || len(in[0].Shape) != 2 || in[0].Shape[1] != nIn {
		return nil, fmt.Errorf("mlp: want one [n,%d] tensor", nIn)
	}
	rows := int(in[0].Shape[0])
	if len(in[0].Data) != rows*nIn*4 {
		return nil, fmt.Errorf("mlp: %d bytes for %d rows", len(in[0].Data), rows)
	}
	x := make([]float32, nIn)
	h := make([]float32, nHidden)
	y := make([]float32, nOut)
	out := make([]byte, 0, rows*nOut*4)
	for r := range rows {
		for i := range x {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[(r*nIn+i)*4:]))
		}
		dense(x, w1, b1, h)
		for j := range h {
			h[j] = max(h[j], 0)
		}
		dense(h, w2, b2, y)
		softmax(y)
		for _, v := range y {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return []runtime.Tensor{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{int64(rows), nOut}, Data: out}}, nil
}

func dense(x, w, b, y []float32) {
	copy(y, b)
	for i, xi := range x {
		row := w[i*len(y) : (i+1)*len(y)]
		for j := range y {
			y[j] += xi * row[j]
		}
	}
}

func softmax(y []float32) {
	m := y[0]
	for _, v := range y {
		m = max(m, v)
	}
	var sum float32
	for j, v := range y {
		y[j] = float32(math.Exp(float64(v - m)))
		sum += y[j]
	}
	for j := range y {
		y[j] /= sum
	}
}

func main() {}
