package bundle

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// dtypes maps the config's dtype names to ONNX TensorProto.DataType numbers.
var dtypes = map[string]int32{
	"float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
	"string": 8, "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16,
}

func parseDType(s string) (int32, error) {
	if d, ok := dtypes[s]; ok {
		return d, nil
	}
	return 0, fmt.Errorf("dtype %q is not one of float32, float64, float16, bfloat16, int8…int64, uint8…uint64, bool, string", s)
}

// tensorConfig is a golden tensor: its values from a .json or .bin file or
// inline.
type tensorConfig struct {
	Name   string    `toml:"name"`
	DType  string    `toml:"dtype"`
	Shape  []int64   `toml:"shape"`
	File   string    `toml:"file"`
	Values []float64 `toml:"values"`
}

func loadTensors(root *os.Root, ts []tensorConfig) ([]*pb.Tensor, error) {
	var out []*pb.Tensor
	for _, tc := range ts {
		t, err := loadTensor(root, tc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", tc.Name, err)
		}
		out = append(out, t)
	}
	return out, nil
}

func loadTensor(root *os.Root, tc tensorConfig) (*pb.Tensor, error) {
	dt, err := parseDType(tc.DType)
	if err != nil {
		return nil, err
	}
	t := &pb.Tensor{Name: tc.Name, Dtype: dt, Shape: tc.Shape}
	if dt == 8 {
		return nil, fmt.Errorf("string golden tensors are not supported in bundle.toml")
	}
	values := tc.Values
	switch ext := path.Ext(tc.File); {
	case tc.File != "" && len(tc.Values) > 0:
		return nil, fmt.Errorf("file or values, not both")
	case tc.File == "":
	case ext == ".bin":
		if t.Data, err = readSmall(root, tc.File, 4<<20); err != nil {
			return nil, err
		}
		return t, nil
	case ext == ".json":
		b, err := readSmall(root, tc.File, 16<<20)
		if err != nil {
			return nil, err
		}
		var v any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", tc.File, err)
		}
		if values, err = flatten(v, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", tc.File, err)
		}
	default:
		return nil, fmt.Errorf("file %q: want a .json or .bin file", tc.File)
	}
	if t.Data, err = encode(dt, values); err != nil {
		return nil, err
	}
	return t, nil
}

// flatten turns nested JSON arrays of numbers into one row-major list.
func flatten(v any, out []float64) ([]float64, error) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			var err error
			if out, err = flatten(e, out); err != nil {
				return nil, err
			}
		}
		return out, nil
	case json.Number:
		f, err := x.Float64()
		if err != nil {
			return nil, err
		}
		return append(out, f), nil
	case bool:
		if x {
			return append(out, 1), nil
		}
		return append(out, 0), nil
	}
	return nil, fmt.Errorf("%v is not a number or an array", v)
}

// encode writes values as raw little-endian elements of dt, refusing a
// value the type cannot hold exactly (an integer type) or at all.
func encode(dt int32, values []float64) ([]byte, error) {
	var buf bytes.Buffer
	for _, v := range values {
		var err error
		switch dt {
		case 1:
			err = binary.Write(&buf, binary.LittleEndian, float32(v))
		case 11:
			err = binary.Write(&buf, binary.LittleEndian, v)
		case 2, 3, 4, 5, 6, 7, 9, 12, 13:
			err = encodeInt(&buf, dt, v)
		default:
			return nil, fmt.Errorf("dtype %d: give the values as a .bin file", dt)
		}
		if err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// intRange is each integer dtype's range (int64 and uint64 limited to what
// a float64 holds exactly).
var intRange = map[int32][2]float64{
	2: {0, math.MaxUint8}, 3: {math.MinInt8, math.MaxInt8}, 4: {0, math.MaxUint16},
	5: {math.MinInt16, math.MaxInt16}, 6: {math.MinInt32, math.MaxInt32}, 7: {-1 << 53, 1 << 53},
	9: {0, 1}, 12: {0, math.MaxUint32}, 13: {0, 1 << 53},
}

func encodeInt(buf *bytes.Buffer, dt int32, v float64) error {
	lo, hi := intRange[dt][0], intRange[dt][1]
	if v != math.Trunc(v) || v < lo || v > hi {
		return fmt.Errorf("%v does not fit dtype %d", v, dt)
	}
	switch dt {
	case 2, 9:
		return buf.WriteByte(uint8(v))
	case 3:
		return buf.WriteByte(byte(int8(v)))
	case 4:
		return binary.Write(buf, binary.LittleEndian, uint16(v))
	case 5:
		return binary.Write(buf, binary.LittleEndian, int16(v))
	case 6:
		return binary.Write(buf, binary.LittleEndian, int32(v))
	case 7:
		return binary.Write(buf, binary.LittleEndian, int64(v))
	case 12:
		return binary.Write(buf, binary.LittleEndian, uint32(v))
	}
	return binary.Write(buf, binary.LittleEndian, uint64(v))
}

// EncodeValues writes values as the raw little-endian elements of dtype
// (a flotilla.v1 TensorInfo dtype), refusing a value the type cannot hold
// exactly: a golden tensor's bytes, or a reference row as a monitor
// function reads it (controlplane/baseline).
func EncodeValues(dtype int32, values []float64) ([]byte, error) { return encode(dtype, values) }
