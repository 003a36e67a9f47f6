package wasm_test

import "math"

// mlpReference computes the mlp guest's outputs in float64, from the
// weight formula its source documents, without sharing its code.
func mlpReference(x []float32) []float64 {
	w := func(layer, i, j int) float64 {
		return float64(float32(0.5 * math.Sin(float64(layer*1000+i*37+j*11)*0.1)))
	}
	rows := len(x) / 64
	out := make([]float64, 0, rows*10)
	for r := range rows {
		h := make([]float64, 32)
		for j := range h {
			h[j] = w(1, -1, j)
			for i := range 64 {
				h[j] += float64(x[r*64+i]) * w(1, i, j)
			}
			h[j] = math.Max(h[j], 0)
		}
		y := make([]float64, 10)
		m := math.Inf(-1)
		for k := range y {
			y[k] = w(2, -1, k)
			for j := range h {
				y[k] += h[j] * w(2, j, k)
			}
			m = math.Max(m, y[k])
		}
		sum := 0.0
		for k := range y {
			y[k] = math.Exp(y[k] - m)
			sum += y[k]
		}
		for k := range y {
			out = append(out, y[k]/sum)
		}
	}
	return out
}
