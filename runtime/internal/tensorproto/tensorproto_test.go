package tensorproto

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/runtime"
)

// TestReadFloatData writes a TensorProto with packed float_data by hand and
// reads back its name, type, shape and little-endian bytes; the same file
// cut short is an error, not a tensor.
func TestReadFloatData(t *testing.T) {
	var b []byte
	for _, d := range []uint64{2, 3} {
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, d)
	}
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(runtime.Float32))
	vals := []float32{1, -2.5, 3, 0, 1e-3, 6}
	var packed []byte
	for _, v := range vals {
		packed = binary.LittleEndian.AppendUint32(packed, math.Float32bits(v))
	}
	b = protowire.AppendTag(b, 4, protowire.BytesType)
	b = protowire.AppendBytes(b, packed)
	b = protowire.AppendTag(b, 8, protowire.BytesType)
	b = protowire.AppendString(b, "x")

	dir := t.TempDir()
	path := filepath.Join(dir, "input_0.pb")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "x" || got.DType != runtime.Float32 || !slices.Equal(got.Shape, []int64{2, 3}) || !slices.Equal(got.Data, packed) {
		t.Fatalf("read %+v", got)
	}

	cut := filepath.Join(dir, "cut.pb")
	if err := os.WriteFile(cut, b[:len(b)-4], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(cut); err == nil {
		t.Fatal("a truncated TensorProto read without error")
	}
}
