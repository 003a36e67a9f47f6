// Package yieldpoint rewrites a WebAssembly module so that it calls a host
// function every so many loop iterations: the host's chance to stop a guest
// past its deadline, and the Go scheduler's chance to preempt it (machine
// code that wazero compiled cannot be preempted, and a goroutine that
// cannot be preempted stalls every garbage collection of the process).
//
// wazero's own answer, WithCloseOnContextDone, leaves compiled code through
// a trampoline into Go at every loop iteration; Go-compiled guests branch
// back to a loop header for every jump, so that costs them about 4× (see
// docs/wasm-abi.md). Here each loop header only decrements a counter held
// in a new mutable global, and calls the imported host function when it
// reaches zero:
//
//	loop …
//	  global.get $fuel; i32.const 1; i32.sub; global.set $fuel
//	  global.get $fuel; i32.eqz
//	  if; i32.const Fuel; global.set $fuel; call $yield; end
//	  …the loop's own body
//
// Every unbounded execution passes a loop header (wasm branches backward
// only to loops) or recurses until the stack overflows. The rewrite appends
// one function type, one function import (shifting the indices of the
// module's own functions by one, everywhere they occur), and one global; it
// drops the "name" custom section, whose function indices it would
// otherwise have to shift. A module using what the rewriter does not parse
// (SIMD, threads, exceptions, tail calls, typed function references, GC
// types) is refused with ErrUnsupported, and the caller falls back to
// wazero's checks.
package yieldpoint

import (
	"errors"
	"fmt"
)

// Fuel is the number of loop iterations between two calls of the yield
// function: at a few nanoseconds an iteration, tens of microseconds.
const Fuel = 1 << 16

// ErrUnsupported is returned for modules the rewriter does not handle.
var ErrUnsupported = errors.New("yieldpoint: module uses a feature the rewriter does not handle")

// ErrMalformed is returned for bytes that are not a valid module.
var ErrMalformed = errors.New("yieldpoint: malformed module")

// Section ids.
const (
	secCustom   = 0
	secType     = 1
	secImport   = 2
	secGlobal   = 6
	secExport   = 7
	secStart    = 8
	secElement  = 9
	secCode     = 10
	secData     = 11
	secDataCnt  = 12
	secTag      = 13
	magicHeader = "\x00asm\x01\x00\x00\x00"
)

type section struct {
	id   byte
	body []byte
}

// Instrument returns code with a call to module.name (type () -> ()) at
// every Fuel-th loop iteration.
func Instrument(code []byte, module, name string) ([]byte, error) {
	if len(code) < 8 || string(code[:8]) != magicHeader {
		return nil, fmt.Errorf("%w: no wasm header", ErrMalformed)
	}
	var secs []section
	r := &reader{b: code[8:]}
	for !r.done() {
		id := r.byte()
		body := r.bytes(int(r.u32()))
		if r.err != nil {
			return nil, r.err
		}
		secs = append(secs, section{id, body})
	}
	find := func(id byte) int {
		for i, s := range secs {
			if s.id == id {
				return i
			}
		}
		return -1
	}
	ti := find(secType)
	if ti < 0 {
		return nil, fmt.Errorf("%w: no type section", ErrUnsupported)
	}
	ii := find(secImport)
	if ii < 0 { // an empty one, right after the types
		ii = ti + 1
		secs = append(secs[:ii], append([]section{{secImport, []byte{0}}}, secs[ii:]...)...)
	}
	// The yield function's type goes last in the type section.
	types, typeBody, err := appendType(secs[ti].body)
	if err != nil {
		return nil, err
	}
	secs[ti].body = typeBody
	// Its import goes last among the imports: existing imported functions
	// keep their indices, the module's own shift by one.
	yieldFunc, importedGlobals, importBody, err := appendImport(secs[ii].body, module, name, types)
	if err != nil {
		return nil, err
	}
	secs[ii].body = importBody
	// The fuel counter goes last among the globals.
	gi := find(secGlobal)
	if gi < 0 {
		at := len(secs)
		for i, s := range secs {
			if s.id == secExport || s.id == secStart || s.id == secElement || s.id == secDataCnt || s.id == secCode || s.id == secData {
				at = i
				break
			}
		}
		secs = append(secs[:at], append([]section{{secGlobal, []byte{0}}}, secs[at:]...)...)
		gi = at
	}
	fuelGlobal, globalBody, err := appendGlobal(secs[gi].body, importedGlobals, yieldFunc)
	if err != nil {
		return nil, err
	}
	secs[gi].body = globalBody

	rw := rewriter{yieldFunc: yieldFunc, fuelGlobal: fuelGlobal}
	out := []byte(magicHeader)
	for _, s := range secs {
		body := s.body
		switch s.id {
		case secCustom:
			n := &reader{b: body}
			if string(n.bytes(int(n.u32()))) == "name" && n.err == nil {
				continue
			}
		case secExport:
			body, err = rw.exports(body)
		case secStart:
			body, err = rw.start(body)
		case secElement:
			body, err = rw.elements(body)
		case secCode:
			body, err = rw.code(body)
		case secTag:
			err = fmt.Errorf("%w: exception tags", ErrUnsupported)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s.id)
		out = appendU32(out, uint32(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// appendType adds the type () -> () and returns the type count before it.
func appendType(body []byte) (uint32, []byte, error) {
	r := &reader{b: body}
	n := r.u32()
	start := r.pos
	for range n {
		if r.byte() != 0x60 {
			return 0, nil, fmt.Errorf("%w: a type that is not a plain function type", ErrUnsupported)
		}
		for range 2 { // params, results
			for range r.u32() {
				r.valtype()
			}
		}
		if r.err != nil {
			return 0, nil, r.err
		}
	}
	if !r.done() {
		return 0, nil, fmt.Errorf("%w: type section has trailing bytes", ErrMalformed)
	}
	out := appendU32(nil, n+1)
	out = append(out, body[start:]...)
	return n, append(out, 0x60, 0, 0), nil
}

// appendImport adds the import of the yield function of type typ and
// returns its function index and the number of imported globals.
func appendImport(body []byte, module, name string, typ uint32) (fn, globals uint32, out []byte, err error) {
	r := &reader{b: body}
	n := r.u32()
	start := r.pos
	for range n {
		r.bytes(int(r.u32())) // module
		r.bytes(int(r.u32())) // name
		switch kind := r.byte(); kind {
		case 0: // function
			r.u32()
			fn++
		case 1: // table
			r.valtype()
			r.limits()
		case 2: // memory
			r.limits()
		case 3: // global
			r.valtype()
			r.byte()
			globals++
		default:
			return 0, 0, nil, fmt.Errorf("%w: import kind %d", ErrUnsupported, kind)
		}
		if r.err != nil {
			return 0, 0, nil, r.err
		}
	}
	if !r.done() {
		return 0, 0, nil, fmt.Errorf("%w: import section has trailing bytes", ErrMalformed)
	}
	out = appendU32(nil, n+1)
	out = append(out, body[start:]...)
	out = appendName(out, module)
	out = appendName(out, name)
	out = append(out, 0)
	return fn, globals, appendU32(out, typ), nil
}

// appendGlobal adds the fuel counter, a mutable i32 starting at Fuel, and
// returns its index. Init expressions may hold ref.func, shifted here.
func appendGlobal(body []byte, imported, yieldFunc uint32) (uint32, []byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n+1)
	rw := rewriter{yieldFunc: yieldFunc}
	for range n {
		at := r.pos
		r.valtype()
		r.byte()
		out = append(out, body[at:r.pos]...)
		out = rw.constExpr(r, out)
		if r.err != nil {
			return 0, nil, r.err
		}
	}
	if !r.done() {
		return 0, nil, fmt.Errorf("%w: global section has trailing bytes", ErrMalformed)
	}
	out = append(out, 0x7f, 1, 0x41)
	out = appendS32(out, Fuel)
	return imported + n, append(out, 0x0b), nil
}

type rewriter struct {
	yieldFunc, fuelGlobal uint32
}

// fn shifts a function index past the yield import.
func (rw rewriter) fn(i uint32) uint32 {
	if i >= rw.yieldFunc {
		return i + 1
	}
	return i
}

func (rw rewriter) exports(body []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n)
	for range n {
		name := r.bytes(int(r.u32()))
		kind := r.byte()
		idx := r.u32()
		if kind == 0 {
			idx = rw.fn(idx)
		}
		out = appendName(out, string(name))
		out = append(out, kind)
		out = appendU32(out, idx)
	}
	return out, r.finish("export")
}

func (rw rewriter) start(body []byte) ([]byte, error) {
	r := &reader{b: body}
	out := appendU32(nil, rw.fn(r.u32()))
	return out, r.finish("start")
}

func (rw rewriter) elements(body []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n)
	for range n {
		flags := r.u32()
		if flags > 7 {
			return nil, fmt.Errorf("%w: element segment flags %d", ErrMalformed, flags)
		}
		out = appendU32(out, flags)
		if flags&2 != 0 && flags&1 == 0 { // explicit table index
			out = appendU32(out, r.u32())
		}
		if flags&1 == 0 { // active: an offset expression
			out = rw.constExpr(r, out)
		}
		if flags&3 != 0 { // elemkind or reftype
			out = append(out, r.byte())
		}
		count := r.u32()
		out = appendU32(out, count)
		for range count {
			if flags&4 == 0 {
				out = appendU32(out, rw.fn(r.u32()))
			} else {
				out = rw.constExpr(r, out)
			}
		}
		if r.err != nil {
			return nil, r.err
		}
	}
	return out, r.finish("element")
}

// constExpr copies a constant expression up to its end, shifting ref.func.
func (rw rewriter) constExpr(r *reader, out []byte) []byte {
	for r.err == nil {
		op := r.byte()
		out = append(out, op)
		switch op {
		case 0x0b:
			return out
		case 0x41, 0x42, 0x23: // i32.const, i64.const, global.get
			at := r.pos
			r.leb(64)
			out = append(out, r.b[at:r.pos]...)
		case 0x43:
			out = append(out, r.bytes(4)...)
		case 0x44:
			out = append(out, r.bytes(8)...)
		case 0xd0: // ref.null
			at := r.pos
			r.leb(33)
			out = append(out, r.b[at:r.pos]...)
		case 0xd2: // ref.func
			out = appendU32(out, rw.fn(r.u32()))
		case 0x6a, 0x6b, 0x6c, 0x7c, 0x7d, 0x7e: // extended constant arithmetic
		default:
			r.fail(fmt.Errorf("%w: constant expression opcode %#x", ErrUnsupported, op))
		}
	}
	return out
}

func (rw rewriter) code(body []byte) ([]byte, error) {
	r := &reader{b: body}
	n := r.u32()
	out := appendU32(nil, n)
	var fn []byte
	for range n {
		size := r.u32()
		f := &reader{b: r.bytes(int(size))}
		if r.err != nil {
			return nil, r.err
		}
		fn = fn[:0]
		// Locals, copied.
		for range f.u32() {
			f.u32()
			f.valtype()
		}
		if f.err != nil {
			return nil, f.err
		}
		fn = append(fn, f.b[:f.pos]...)
		var err error
		if fn, err = rw.instructions(f, fn); err != nil {
			return nil, err
		}
		out = appendU32(out, uint32(len(fn)))
		out = append(out, fn...)
	}
	return out, r.finish("code")
}

// instructions copies a function body's instructions, adding the fuel
// check after every loop header and shifting function indices. Runs of
// unchanged bytes are copied whole.
func (rw rewriter) instructions(r *reader, out []byte) ([]byte, error) {
	from := r.pos
	shift := func(at int) { // the function index read from at
		if i := r.u32(); i >= rw.yieldFunc && r.err == nil {
			out = append(out, r.b[from:at]...)
			out = appendU32(out, i+1)
			from = r.pos
		}
	}
	for !r.done() && r.err == nil {
		op := r.byte()
		switch {
		case op == 0x02 || op == 0x04: // block, if
			r.blockType()
		case op == 0x03: // loop
			r.blockType()
			out = append(out, r.b[from:r.pos]...)
			out = rw.check(out)
			from = r.pos
		case op == 0x0c || op == 0x0d: // br, br_if
			r.u32()
		case op == 0x0e: // br_table
			for range r.u32() + 1 {
				r.u32()
			}
		case op == 0x10 || op == 0xd2: // call, ref.func
			shift(r.pos)
		case op == 0x11: // call_indirect type table
			r.u32()
			r.u32()
		case op == 0x1c: // select with types
			for range r.u32() {
				r.valtype()
			}
		case op >= 0x20 && op <= 0x26: // local.*, global.*, table.get/set
			r.u32()
		case op >= 0x28 && op <= 0x3e: // loads and stores: memarg
			if r.u32()&0x40 != 0 { // multi-memory index
				r.u32()
			}
			r.leb(64)
		case op == 0x3f || op == 0x40: // memory.size, memory.grow
			r.u32()
		case op == 0x41 || op == 0x42 || op == 0xd0: // i32.const, i64.const, ref.null
			r.leb(64)
		case op == 0x43:
			r.bytes(4)
		case op == 0x44:
			r.bytes(8)
		case op == 0xfc:
			switch sub := r.u32(); {
			case sub <= 7: // saturating conversions
			case sub == 8 || sub == 10 || sub == 12 || sub == 14: // memory.init, memory.copy, table.init, table.copy
				r.u32()
				r.u32()
			case sub <= 17: // data.drop, memory.fill, elem.drop, table.grow/size/fill
				r.u32()
			default:
				return nil, fmt.Errorf("%w: opcode 0xfc %d", ErrUnsupported, sub)
			}
		case op <= 0x01 || op == 0x05 || op == 0x0b || op == 0x0f || op == 0x1a || op == 0x1b ||
			(op >= 0x45 && op <= 0xc4) || op == 0xd1:
			// no immediates
		default:
			return nil, fmt.Errorf("%w: opcode %#x", ErrUnsupported, op)
		}
	}
	return append(out, r.b[from:r.pos]...), r.err
}

// check appends the fuel check.
func (rw rewriter) check(out []byte) []byte {
	g := lebU32(rw.fuelGlobal)
	out = append(out, 0x23)
	out = append(out, g...)
	out = append(out, 0x41, 1, 0x6b, 0x24) // i32.const 1; i32.sub; global.set
	out = append(out, g...)
	out = append(out, 0x23)
	out = append(out, g...)
	out = append(out, 0x45, 0x04, 0x40, 0x41) // i32.eqz; if; i32.const
	out = appendS32(out, Fuel)
	out = append(out, 0x24)
	out = append(out, g...)
	out = append(out, 0x10) // call
	out = appendU32(out, rw.yieldFunc)
	return append(out, 0x0b)
}

func isValtype(b byte) bool {
	return b >= 0x7b && b <= 0x7f || b == 0x70 || b == 0x6f
}
