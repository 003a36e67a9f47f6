package monitorfn_test

import "github.com/flotilla-edge/flotilla/runtime/wasm/internal/wasmasm"

// asmOpts vary the hand-assembled monitor module of asm.
type asmOpts struct {
	extraExport    string // export the monitor function a second time under this name
	exportGlobal   bool   // export a global too
	noAlloc        bool   // leave alloc out
	noMemoryExport bool   // keep the memory unexported
	importEnv      bool   // import env.f, a function the host does not offer
	wrongSig       bool   // the monitor function returns i64
	allocPtr       int32  // what alloc returns (default 1024)
}

// asm assembles a small monitor module: one page of memory, alloc
// returning a fixed pointer, and "features" returning 0 (no results).
func asm(o asmOpts) []byte {
	const i32, i64 = 0x7f, 0x7e
	ptr := o.allocPtr
	if ptr == 0 {
		ptr = 1024
	}
	result := byte(i32)
	if o.wrongSig {
		result = i64
	}
	fnType := func(params []byte, results ...byte) []byte {
		return cat([]byte{0x60}, vec(params), vec(results))
	}
	types := cat([]byte{3},
		fnType([]byte{i32, i32, i32, i32}, result),
		fnType([]byte{i32}, i32),
		fnType(nil))
	var imports []byte
	nImported := 0
	if o.importEnv {
		imports = cat([]byte{1}, name("env"), name("f"), []byte{0, 2})
		nImported = 1
	}
	feat := byte(nImported)
	alloc := byte(nImported + 1)
	var exports [][]byte
	exports = append(exports, cat(name("features"), []byte{0, feat}))
	if !o.noAlloc {
		exports = append(exports, cat(name("alloc"), []byte{0, alloc}))
	}
	if !o.noMemoryExport {
		exports = append(exports, cat(name("memory"), []byte{2, 0}))
	}
	if o.extraExport != "" {
		exports = append(exports, cat(name(o.extraExport), []byte{0, feat}))
	}
	if o.exportGlobal {
		exports = append(exports, cat(name("g"), []byte{3, 0}))
	}
	exportSec := []byte{byte(len(exports))}
	for _, e := range exports {
		exportSec = append(exportSec, e...)
	}
	zero := byte(0x41)
	featBody := []byte{0, zero, 0}
	if o.wrongSig {
		featBody = []byte{0, 0x42, 0}
	}
	featBody = append(featBody, 0x0b)
	allocBody := cat([]byte{0, 0x41}, sleb(int64(ptr)), []byte{0x0b})
	code := cat([]byte{2}, vec(featBody), vec(allocBody))
	mod := cat([]byte("\x00asm\x01\x00\x00\x00"), section(1, types))
	if imports != nil {
		mod = append(mod, section(2, imports)...)
	}
	mod = append(mod, section(3, []byte{2, 0, 1})...)
	mod = append(mod, section(5, []byte{1, 0, 1})...)
	if o.exportGlobal {
		mod = append(mod, section(6, []byte{1, i32, 0, 0x41, 0, 0x0b})...)
	}
	mod = append(mod, section(7, exportSec)...)
	return append(mod, section(10, code)...)
}

// The module encoders (runtime/wasm/internal/wasmasm), by short names.
var (
	section = wasmasm.Section
	vec     = wasmasm.Vec
	name    = wasmasm.Name
	cat     = wasmasm.Cat
	sleb    = wasmasm.SLEB
)
