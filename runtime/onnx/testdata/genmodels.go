//go:build ignore

// genmodels writes the tiny ONNX models the runtime tests use, encoding
// ModelProto by hand with protowire (no Python, no onnx module):
//
//	go run runtime/onnx/testdata/genmodels.go runtime/onnx/testdata
package main

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX TensorProto.DataType numbers (runtime.DType uses the same).
const (
	tFloat32  = 1
	tUint8    = 2
	tInt8     = 3
	tUint16   = 4
	tInt16    = 5
	tInt32    = 6
	tInt64    = 7
	tString   = 8
	tBool     = 9
	tFloat16  = 10
	tFloat64  = 11
	tUint32   = 12
	tUint64   = 13
	tBFloat16 = 16
)

var allTypes = []struct {
	name string
	t    int
}{
	{"float32", tFloat32}, {"uint8", tUint8}, {"int8", tInt8}, {"uint16", tUint16},
	{"int16", tInt16}, {"int32", tInt32}, {"int64", tInt64}, {"string", tString},
	{"bool", tBool}, {"float16", tFloat16}, {"float64", tFloat64}, {"uint32", tUint32},
	{"uint64", tUint64}, {"bfloat16", tBFloat16},
}

func bytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func varintField(b []byte, num protowire.Number, v uint64) []byte {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// dim: >= 0 is a fixed size, -1 a symbolic one ("n").
func valueInfo(name string, elem int, shape []int64) []byte {
	var sh []byte
	for _, d := range shape {
		var dim []byte
		if d < 0 {
			dim = bytesField(nil, 2, []byte("n"))
		} else {
			dim = varintField(nil, 1, uint64(d))
		}
		sh = bytesField(sh, 1, dim)
	}
	tt := varintField(nil, 1, uint64(elem))
	tt = bytesField(tt, 2, sh) // shape present, possibly empty: rank 0
	typ := bytesField(nil, 1, tt)
	vi := bytesField(nil, 1, []byte(name))
	return bytesField(vi, 2, typ)
}

type node struct {
	op      string
	in, out []string
	attrs   [][]byte
}

func (n node) encode() []byte {
	var b []byte
	for _, s := range n.in {
		b = bytesField(b, 1, []byte(s))
	}
	for _, s := range n.out {
		b = bytesField(b, 2, []byte(s))
	}
	b = bytesField(b, 4, []byte(n.op))
	for _, a := range n.attrs {
		b = bytesField(b, 5, a)
	}
	return b
}

func tensorAttr(name string, tensor []byte) []byte {
	a := bytesField(nil, 1, []byte(name))
	a = bytesField(a, 5, tensor)
	return varintField(a, 20, 4) // AttributeProto.TENSOR
}

func tensorProto(elem int, dims []int64, raw []byte) []byte {
	var b []byte
	for _, d := range dims {
		b = varintField(b, 1, uint64(d))
	}
	b = varintField(b, 2, uint64(elem))
	return bytesField(b, 9, raw)
}

func model(name string, nodes []node, inputs, outputs [][]byte) []byte {
	var g []byte
	for _, n := range nodes {
		g = bytesField(g, 1, n.encode())
	}
	g = bytesField(g, 2, []byte(name))
	for _, in := range inputs {
		g = bytesField(g, 11, in)
	}
	for _, out := range outputs {
		g = bytesField(g, 12, out)
	}
	m := varintField(nil, 1, 8) // ir_version
	m = bytesField(m, 2, []byte("flotilla-genmodels"))
	m = bytesField(m, 7, g)
	opset := bytesField(nil, 1, nil)
	opset = varintField(opset, 2, 13)
	return bytesField(m, 8, opset)
}

// identity: one Identity per type, every input of the given shape.
func identity(name string, shape []int64, types []int) []byte {
	var nodes []node
	var ins, outs [][]byte
	for _, t := range allTypes {
		keep := types == nil
		for _, x := range types {
			keep = keep || x == t.t
		}
		if !keep {
			continue
		}
		in, out := "x_"+t.name, "y_"+t.name
		nodes = append(nodes, node{op: "Identity", in: []string{in}, out: []string{out}})
		ins = append(ins, valueInfo(in, t.t, shape))
		outs = append(outs, valueInfo(out, t.t, shape))
	}
	return model(name, nodes, ins, outs)
}

func f32(vs ...float32) []byte {
	b := make([]byte, 4*len(vs))
	for i, v := range vs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func main() {
	dir := "."
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	models := map[string][]byte{
		// Every dtype, a dynamic dimension: zero-size and auto-allocated outputs.
		"identity_dynamic.onnx": identity("identity_dynamic", []int64{-1}, nil),
		// Every dtype, static [2,3]: preallocated outputs.
		"identity_static.onnx": identity("identity_static", []int64{2, 3}, nil),
		// Every dtype, static [0,3]: zero-size in and out with a known shape.
		"identity_zero.onnx": identity("identity_zero", []int64{0, 3}, nil),
		// Rank 0 for every dtype.
		"identity_scalar.onnx": identity("identity_scalar", []int64{}, nil),
		// y = x + b, x float32 [n,2]: a model that computes.
		"add.onnx": model("add",
			[]node{
				{op: "Constant", out: []string{"b"}, attrs: [][]byte{tensorAttr("value", tensorProto(tFloat32, []int64{2}, f32(10, 20)))}},
				{op: "Add", in: []string{"x", "b"}, out: []string{"y"}},
			},
			[][]byte{valueInfo("x", tFloat32, []int64{-1, 2})},
			[][]byte{valueInfo("y", tFloat32, []int64{-1, 2})}),
		// No inputs: a constant [2] and a constant scalar.
		"constant.onnx": model("constant",
			[]node{
				{op: "Constant", out: []string{"y"}, attrs: [][]byte{tensorAttr("value", tensorProto(tFloat32, []int64{2}, f32(1.5, -2)))}},
				{op: "Constant", out: []string{"s"}, attrs: [][]byte{tensorAttr("value", tensorProto(tFloat32, nil, f32(7)))}},
			},
			nil,
			[][]byte{valueInfo("y", tFloat32, []int64{2}), valueInfo("s", tFloat32, []int64{})}),
	}
	for name, b := range models {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}
