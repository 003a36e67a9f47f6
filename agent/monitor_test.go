package agent

import (
	"encoding/binary"
	"math"
	"testing"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

func f32Row(shape []int64, vs ...float32) runtime.Tensor {
	var data []byte
	for _, v := range vs {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(v))
	}
	return runtime.Tensor{DType: runtime.Float32, Shape: shape, Data: data}
}

// TestFeaturesReadsEachTensorRun: features of several tensors, interleaved,
// are each read from their own tensor's first row (inputs before
// outputs); an index past the row, or a tensor not there, is missing.
func TestFeaturesReadsEachTensorRun(t *testing.T) {
	a := f32Row([]int64{2, 3}, 1, 2, 3, 9, 9, 9)
	a.Name = "a"
	b := f32Row([]int64{1, 2}, 10, 20)
	b.Name = "b"
	out := f32Row([]int64{1, 2}, 100, 200)
	out.Name = "b" // an output named as an input: the input wins
	o := f32Row([]int64{1, 1}, 7)
	o.Name = "o"
	u := runtime.Tensor{Name: "u", DType: runtime.Uint8, Shape: []int64{1, 2}, Data: []byte{5, 6}}
	fs := []*pb.FeatureBaseline{
		{Tensor: "a", Index: 0}, {Tensor: "a", Index: 2}, {Tensor: "b", Index: 1}, {Tensor: "a", Index: 1},
		{Tensor: "a", Index: 3}, {Tensor: "o", Index: 0}, {Tensor: "gone", Index: 0}, {Tensor: "b", Index: 0},
		{Tensor: "u", Index: 1}, {Tensor: "u", Index: 2},
	}
	f, missing := features(fs, []runtime.Tensor{a, b, u}, []runtime.Tensor{out, o})
	want := []float64{1, 3, 20, 2, math.NaN(), 7, math.NaN(), 10, 6, math.NaN()}
	wantMissing := []bool{false, false, false, false, true, false, true, false, false, true}
	for i := range want {
		if missing[i] != wantMissing[i] || (!missing[i] && f[i] != want[i]) || (missing[i] && !math.IsNaN(f[i])) {
			t.Errorf("feature %d: %v (missing %v), want %v (missing %v)", i, f[i], missing[i], want[i], wantMissing[i])
		}
	}
}
