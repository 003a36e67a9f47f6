// Package wasmasm encodes the pieces of a WebAssembly binary module —
// sections, length-prefixed vectors, names and LEB128 integers — for
// tests that hand-assemble small modules (a module wazero compiles in
// milliseconds, or one shaped to break a rule on purpose).
package wasmasm

// Section is a section with its id and length prefix.
func Section(id byte, body []byte) []byte { return Cat([]byte{id}, Vec(body)) }

// Vec prefixes b with its length.
func Vec(b []byte) []byte { return Cat(ULEB(uint64(len(b))), b) }

// Name is a name: its UTF-8 bytes, length-prefixed.
func Name(s string) []byte { return Vec([]byte(s)) }

// Cat concatenates parts into a new slice.
func Cat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ULEB is v in unsigned LEB128.
func ULEB(v uint64) []byte {
	var b []byte
	for v >= 0x80 {
		b = append(b, byte(v)|0x80)
		v >>= 7
	}
	return append(b, byte(v))
}

// SLEB is v in signed LEB128.
func SLEB(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v == 0 && c&0x40 == 0 || v == -1 && c&0x40 != 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
