package inferapi

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
)

var (
	digitsIn  = []runtime.TensorInfo{{Name: "pixels", DType: runtime.Float32, Shape: []int64{-1, 64}}}
	digitsOut = []runtime.TensorInfo{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{-1, 10}}}
)

// BenchmarkDecodeDigits is the request decoder alone on the digits
// request BenchmarkInfer sends.
func BenchmarkDecodeDigits(b *testing.B) {
	body := digitsCase(b).body
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := decodeRequest(body, nil, digitsIn, digitsOut, Limits{}.withDefaults()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeDigits is the response encoder alone on one digits
// answer.
func BenchmarkEncodeDigits(b *testing.B) {
	var data []byte
	for i := range 10 {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(i)/7))
	}
	out := []runtime.Tensor{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{1, 10}, Data: data}}
	d := &decoded{}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := encodeResponse("digits", "1", d, out); err != nil {
			b.Fatal(err)
		}
	}
}
