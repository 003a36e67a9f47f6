package yieldpoint_test

import (
	"context"
	"errors"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/yieldpoint"
)

// counter is a module (hand-assembled) whose export count(n) loops n
// times; a second export, twice(n), calls count through a table, so the
// rewrite must shift a call, an element segment and the exports.
func counter() []byte {
	b := []byte("\x00asm\x01\x00\x00\x00")
	add := func(id byte, body ...byte) { b = append(append(b, id, byte(len(body))), body...) }
	add(1, 1, 0x60, 1, 0x7f, 0)                 // type 0: (i32) -> ()
	add(3, 2, 0, 0)                             // two functions of type 0
	add(4, 1, 0x70, 0, 1)                       // a funcref table of 1
	add(7, 2, 5, 'c', 'o', 'u', 'n', 't', 0, 0, // export count = func 0
		5, 't', 'w', 'i', 'c', 'e', 0, 1) // export twice = func 1
	add(9, 1, 0, 0x41, 0, 0x0b, 1, 0) // table[0] = func 0
	count := []byte{0,                // no locals
		0x02, 0x40, 0x03, 0x40, // block; loop
		0x20, 0, 0x45, 0x0d, 1, // local.get 0; i32.eqz; br_if 1
		0x20, 0, 0x41, 1, 0x6b, 0x21, 0, // n--
		0x0c, 0, 0x0b, 0x0b, 0x0b} // br 0; end; end; end
	twice := []byte{0,
		0x20, 0, 0x10, 0, // call count(n)
		0x20, 0, 0x41, 0, 0x11, 0, 0, // call_indirect type 0 table 0 (table[0] = count)
		0x0b}
	code := append([]byte{2, byte(len(count))}, count...)
	code = append(code, byte(len(twice)))
	code = append(code, twice...)
	add(10, code...)
	return b
}

func TestYieldsEveryFuelIterations(t *testing.T) {
	out, err := yieldpoint.Instrument(counter(), "host", "yield")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r := wazero.NewRuntime(ctx)
	defer r.Close(ctx)
	yields := 0
	if _, err := r.NewHostModuleBuilder("host").NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(func(context.Context, api.Module, []uint64) { yields++ }), nil, nil).
		Export("yield").Instantiate(ctx); err != nil {
		t.Fatal(err)
	}
	mod, err := r.Instantiate(ctx, out)
	if err != nil {
		t.Fatal(err)
	}
	// count(n) passes its loop header n+1 times.
	if _, err := mod.ExportedFunction("count").Call(ctx, 3*yieldpoint.Fuel-1); err != nil {
		t.Fatal(err)
	}
	if yields != 3 {
		t.Fatalf("%d yields after 3×Fuel loop iterations, want 3", yields)
	}
	// twice calls count directly and through the table: both shifted.
	yields = 0
	if _, err := mod.ExportedFunction("twice").Call(ctx, yieldpoint.Fuel); err != nil {
		t.Fatal(err)
	}
	if yields != 2 {
		t.Fatalf("%d yields after 2×(Fuel+1) iterations, want 2", yields)
	}
}

func TestRefusals(t *testing.T) {
	if _, err := yieldpoint.Instrument(guestbuild.TinySIMD(), "h", "y"); !errors.Is(err, yieldpoint.ErrUnsupported) {
		t.Errorf("SIMD: err = %v, want ErrUnsupported", err)
	}
	if _, err := yieldpoint.Instrument(guestbuild.Tiny(), "h", "y"); err != nil {
		t.Errorf("tiny (no imports, no globals): %v", err)
	}
	m := counter()
	for _, b := range [][]byte{nil, []byte("not wasm"), m[:len(m)-3], append(append([]byte{}, m...), 10, 200)} {
		if _, err := yieldpoint.Instrument(b, "h", "y"); !errors.Is(err, yieldpoint.ErrMalformed) && !errors.Is(err, yieldpoint.ErrUnsupported) {
			t.Errorf("%x…: err = %v, want ErrMalformed", b[:min(len(b), 8)], err)
		}
	}
}

// FuzzInstrument: any bytes give a module or an error, never a panic,
// and what comes out is itself accepted by the rewriter.
func FuzzInstrument(f *testing.F) {
	f.Add(counter())
	f.Add(guestbuild.Tiny())
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := yieldpoint.Instrument(b, "h", "y")
		if err != nil {
			return
		}
		if _, err := yieldpoint.Instrument(out, "h2", "y2"); err != nil && !errors.Is(err, yieldpoint.ErrUnsupported) {
			t.Fatalf("the rewrite of a module is refused: %v", err)
		}
	})
}
