// Package tensorproto reads ONNX TensorProto files — the format of the
// ONNX backend test cases (libonnx-testdata) and of models' test_data_set
// folders — into runtime tensors. The conformance runners and benchmarks
// of runtime/native and runtime/wasm/wasinn share it.
package tensorproto

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Read reads an ONNX TensorProto file (the backend tests'
// input_N.pb / output_N.pb) into a Tensor, with a small protowire reader:
// dims=1, data_type=2, float_data=4, int32_data=5, string_data=6,
// int64_data=7, name=8, raw_data=9, double_data=10, uint64_data=11.
func Read(path string) (runtime.Tensor, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runtime.Tensor{}, err
	}
	t := runtime.Tensor{Shape: []int64{}}
	var raw []byte
	var ints []uint64 // int32_data, int64_data, uint64_data as read
	var floats []float32
	var doubles []float64
	hasRaw := false
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return t, fmt.Errorf("%s: bad tag", path)
		}
		b = b[n:]
		// repeated numeric fields come packed (BytesType) or one by one.
		each := func(read func([]byte) int) error {
			if typ == protowire.BytesType {
				v, n := protowire.ConsumeBytes(b)
				if n < 0 {
					return fmt.Errorf("%s: field %d", path, num)
				}
				for len(v) > 0 {
					k := read(v)
					if k < 0 {
						return fmt.Errorf("%s: field %d", path, num)
					}
					v = v[k:]
				}
				b = b[n:]
				return nil
			}
			k := read(b)
			if k < 0 {
				return fmt.Errorf("%s: field %d", path, num)
			}
			b = b[k:]
			return nil
		}
		varint := func(dst *[]uint64) func([]byte) int {
			return func(v []byte) int {
				x, n := protowire.ConsumeVarint(v)
				*dst = append(*dst, x)
				return n
			}
		}
		switch {
		case num == 1:
			var dims []uint64
			err = each(varint(&dims))
			for _, d := range dims {
				t.Shape = append(t.Shape, int64(d))
			}
		case num == 2 && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			t.DType, b = runtime.DType(v), b[n:]
		case num == 4:
			err = each(func(v []byte) int {
				x, n := protowire.ConsumeFixed32(v)
				floats = append(floats, math.Float32frombits(x))
				return n
			})
		case num == 5 || num == 7 || num == 11:
			err = each(varint(&ints))
		case num == 10:
			err = each(func(v []byte) int {
				x, n := protowire.ConsumeFixed64(v)
				doubles = append(doubles, math.Float64frombits(x))
				return n
			})
		case num == 6 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			t.Strings, b = append(t.Strings, string(v)), b[n:]
		case num == 8 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			t.Name, b = string(v), b[n:]
		case num == 9 && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			raw, hasRaw, b = append([]byte(nil), v...), true, b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return t, fmt.Errorf("%s: field %d", path, num)
			}
			b = b[n:]
		}
		if err != nil {
			return t, err
		}
	}
	switch {
	case t.DType == runtime.String:
		return t, t.Validate()
	case hasRaw:
		t.Data = raw
	case t.DType == runtime.Float32:
		t.Data = make([]byte, 0, 4*len(floats))
		for _, f := range floats {
			t.Data = binary.LittleEndian.AppendUint32(t.Data, math.Float32bits(f))
		}
	case t.DType == runtime.Float64:
		t.Data = make([]byte, 0, 8*len(doubles))
		for _, f := range doubles {
			t.Data = binary.LittleEndian.AppendUint64(t.Data, math.Float64bits(f))
		}
	default:
		// int32_data carries every type narrower than 32 bits (float16 as
		// its bits); int64_data and uint64_data the 64-bit ones.
		size := t.DType.Size()
		if size == 0 {
			return t, fmt.Errorf("%s: %w: type %v", path, runtime.ErrUnsupported, t.DType)
		}
		t.Data = make([]byte, len(ints)*size)
		for i, v := range ints {
			switch size {
			case 1:
				t.Data[i] = byte(v)
			case 2:
				binary.LittleEndian.PutUint16(t.Data[2*i:], uint16(v))
			case 4:
				binary.LittleEndian.PutUint32(t.Data[4*i:], uint32(v))
			case 8:
				binary.LittleEndian.PutUint64(t.Data[8*i:], v)
			}
		}
	}
	if t.Data == nil {
		t.Data = []byte{}
	}
	return t, t.Validate()
}
