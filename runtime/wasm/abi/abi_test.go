package abi_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/abi"
)

var sample = []runtime.Tensor{
	{Name: "pixels", DType: runtime.Float32, Shape: []int64{2, 3}, Data: []byte("0123456789abcdefghijklmn")},
	{Name: "scalar", DType: runtime.Int64, Data: []byte("12345678")},
	{Name: "words", DType: runtime.String, Shape: []int64{2}, Strings: []string{"a", ""}},
	{Name: "empty", DType: runtime.Uint8, Shape: []int64{0, 4}},
}

// TestCodecMatchesProto checks the guests' codec against the generated
// protobuf code both ways.
func TestCodecMatchesProto(t *testing.T) {
	var pm flotillapb.Tensors
	if err := proto.Unmarshal(abi.AppendTensors(nil, sample), &pm); err != nil {
		t.Fatal(err)
	}
	if len(pm.Tensors) != len(sample) || pm.Tensors[0].Dtype != 1 || fmt.Sprint(pm.Tensors[0].Shape) != "[2 3]" || len(pm.Tensors[2].Strings) != 2 {
		t.Fatalf("proto read %v", &pm)
	}
	b, err := proto.Marshal(&pm)
	if err != nil {
		t.Fatal(err)
	}
	got, err := abi.DecodeTensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(sample) {
		t.Fatalf("decoded %v, want %v", got, sample)
	}

	var d flotillapb.LoadResponse
	infos := []runtime.TensorInfo{{Name: "x", DType: runtime.Float32, Shape: []int64{-1, 64}}}
	if err := proto.Unmarshal(abi.AppendDescription(nil, infos, infos), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Inputs) != 1 || len(d.Outputs) != 1 || fmt.Sprint(d.Inputs[0].Shape) != "[-1 64]" {
		t.Fatalf("description %v", &d)
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, b := range [][]byte{{0xff}, {0x0a, 0x05, 0x01}, {0x0a, 0x02, 0x12, 0x02}} {
		if _, err := abi.DecodeTensors(b); !errors.Is(err, abi.ErrMalformed) {
			t.Errorf("%x: err = %v, want ErrMalformed", b, err)
		}
	}
}

func TestPack(t *testing.T) {
	for _, c := range []struct {
		ptr, n uint32
		isErr  bool
	}{{0, 0, false}, {0xfffffff0, abi.MaxLen, true}, {1024, 7, false}} {
		r, err := abi.Pack(c.ptr, c.n, c.isErr)
		if err != nil {
			t.Fatal(err)
		}
		if p, n, e := abi.Unpack(r); p != c.ptr || n != c.n || e != c.isErr {
			t.Errorf("Unpack(Pack(%v)) = %d %d %v", c, p, n, e)
		}
	}
	if _, err := abi.Pack(0, abi.MaxLen+1, false); !errors.Is(err, abi.ErrTooLong) {
		t.Fatalf("err = %v", err)
	}
}
