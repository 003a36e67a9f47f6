package guestbuild

import "github.com/flotilla-edge/flotilla/runtime/wasm/internal/wasmasm"

// Tiny returns a hand-assembled module implementing the reactor ABI, for
// tests that need a module wazero compiles in milliseconds (a Go guest
// takes seconds, minutes under -race). It exports memory (one page),
// alloc (always 1024), free (a no-op) and infer: an empty request gets an
// empty result (no tensors); any other request loops forever.
func Tiny() []byte { return tiny(false) }

// TinySIMD is Tiny with a SIMD instruction in infer, which the yieldpoint
// rewriter refuses: the runtime falls back to wazero's own loop checks.
func TinySIMD() []byte { return tiny(true) }

func tiny(simd bool) []byte {
	const (
		i32, i64 = 0x7f, 0x7e
		ptr      = 1024
	)
	fn := func(params, results []byte) []byte {
		b := append([]byte{0x60}, vec(params)...)
		return append(b, vec(results)...)
	}
	types := cat([]byte{3}, fn([]byte{i32}, []byte{i32}), fn([]byte{i32, i32}, nil), fn([]byte{i32, i32}, []byte{i64}))
	exports := cat([]byte{4},
		name("memory"), []byte{2, 0},
		name("alloc"), []byte{0, 0},
		name("free"), []byte{0, 1},
		name("infer"), []byte{0, 2})
	alloc := cat([]byte{0, 0x41}, sleb(ptr), []byte{0x0b})
	free := []byte{0, 0x0b}
	var v128 []byte
	if simd {
		v128 = append([]byte{0xfd, 0x0c}, make([]byte, 16)...) // v128.const 0
		v128 = append(v128, 0x1a)                              // drop
	}
	infer := cat([]byte{0}, v128, []byte{
		0x20, 1, // local.get len
		0x04, 0x40, // if
		0x03, 0x40, 0x0c, 0, 0x0b, // loop; br 0; end
		0x0b,  // end
		0x42}, // i64.const ptr<<32 (length 0)
		sleb(ptr<<32), []byte{0x0b})
	code := cat([]byte{3}, vec(alloc), vec(free), vec(infer))
	return cat([]byte("\x00asm\x01\x00\x00\x00"),
		section(1, types),
		section(3, []byte{3, 0, 1, 2}),
		section(5, []byte{1, 0, 1}),
		section(7, exports),
		section(10, code))
}

// The module encoders (runtime/wasm/internal/wasmasm), by short names.
var (
	section = wasmasm.Section
	vec     = wasmasm.Vec
	name    = wasmasm.Name
	cat     = wasmasm.Cat
	sleb    = wasmasm.SLEB
)
