//go:build cgo

package onnx

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/runtime"
)

// writeIdentity writes m.onnx into dir: y_<dt> = Identity(x_<dt>) with the
// given shape (-1 is a symbolic dimension). The ModelProto is encoded by
// hand, as testdata/genmodels.go does for the committed models.
func writeIdentity(t testing.TB, dir string, dt runtime.DType, shape []int64) {
	t.Helper()
	field := func(b []byte, num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, num, protowire.BytesType), v)
	}
	varint := func(b []byte, num protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, num, protowire.VarintType), v)
	}
	valueInfo := func(name string) []byte {
		var sh []byte
		for _, d := range shape {
			if d < 0 {
				sh = field(sh, 1, field(nil, 2, []byte("n")))
			} else {
				sh = field(sh, 1, varint(nil, 1, uint64(d)))
			}
		}
		tt := field(varint(nil, 1, uint64(dt)), 2, sh)
		return field(field(nil, 1, []byte(name)), 2, field(nil, 1, tt))
	}
	in, out := "x_"+dt.String(), "y_"+dt.String()
	node := field(field(field(nil, 1, []byte(in)), 2, []byte(out)), 4, []byte("Identity"))
	g := field(nil, 1, node)
	g = field(g, 2, []byte("identity"))
	g = field(g, 11, valueInfo(in))
	g = field(g, 12, valueInfo(out))
	m := varint(nil, 1, 8)
	m = field(m, 7, g)
	m = field(m, 8, varint(field(nil, 1, nil), 2, 13))
	if err := os.WriteFile(filepath.Join(dir, "m.onnx"), m, 0o644); err != nil {
		t.Fatal(err)
	}
}
