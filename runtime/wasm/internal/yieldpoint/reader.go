package yieldpoint

import "fmt"

// reader decodes a module's bytes; the first error sticks and every read
// after it returns zeros.
type reader struct {
	b   []byte
	pos int
	err error
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.pos = len(r.b)
}

func (r *reader) done() bool { return r.pos >= len(r.b) }

func (r *reader) peek() byte {
	if r.done() {
		return 0
	}
	return r.b[r.pos]
}

func (r *reader) byte() byte {
	if r.done() {
		r.fail(fmt.Errorf("%w: unexpected end", ErrMalformed))
		return 0
	}
	r.pos++
	return r.b[r.pos-1]
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || n > len(r.b)-r.pos {
		r.fail(fmt.Errorf("%w: %d bytes past the end", ErrMalformed, n))
		return nil
	}
	r.pos += n
	return r.b[r.pos-n : r.pos]
}

// leb skips or reads an unsigned LEB128 of at most bits bits; signed
// values are read the same way, their bytes copied verbatim by callers.
func (r *reader) leb(bits int) uint64 {
	var v uint64
	for shift := 0; ; shift += 7 {
		if shift >= bits+7 {
			r.fail(fmt.Errorf("%w: LEB128 too long", ErrMalformed))
			return 0
		}
		b := r.byte()
		if r.err != nil {
			return 0
		}
		if shift < 64 {
			v |= uint64(b&0x7f) << shift
		}
		if b&0x80 == 0 {
			return v
		}
	}
}

func (r *reader) u32() uint32 {
	v := r.leb(32)
	if v > 1<<32-1 {
		r.fail(fmt.Errorf("%w: u32 out of range", ErrMalformed))
		return 0
	}
	return uint32(v)
}

// blockType skips a block type: empty, a value type or a type index.
func (r *reader) blockType() {
	if b := r.peek(); b == 0x40 || isValtype(b) {
		r.pos++
		return
	}
	r.leb(33)
}

// valtype reads a one-byte value type; multi-byte (GC) types are refused.
func (r *reader) valtype() byte {
	b := r.byte()
	if r.err == nil && !isValtype(b) {
		r.fail(fmt.Errorf("%w: value type %#x", ErrUnsupported, b))
	}
	return b
}

// limits reads a table's or memory's limits.
func (r *reader) limits() {
	flags := r.byte()
	if flags > 7 {
		r.fail(fmt.Errorf("%w: limits flags %#x", ErrUnsupported, flags))
		return
	}
	r.leb(64)
	if flags&1 != 0 {
		r.leb(64)
	}
}

// finish reports an error or trailing bytes after a section.
func (r *reader) finish(what string) error {
	if r.err != nil {
		return r.err
	}
	if !r.done() {
		return fmt.Errorf("%w: %s section has trailing bytes", ErrMalformed, what)
	}
	return nil
}

func appendU32(b []byte, v uint32) []byte {
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

func lebU32(v uint32) []byte { return appendU32(nil, v) }

func appendS32(b []byte, v int32) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

func appendName(b []byte, s string) []byte {
	b = appendU32(b, uint32(len(s)))
	return append(b, s...)
}
