package monitorfn

import (
	"encoding/binary"
	"fmt"
)

// Export kinds in a module's export section.
const (
	kindFunc   = 0
	kindTable  = 1
	kindMemory = 2
	kindGlobal = 3
	kindTag    = 4
)

// export is one entry of a module's export section.
type export struct {
	name string
	kind byte
}

// Limits of the export-section reader.
const (
	maxExports    = 1 << 10
	maxExportName = 1 << 10
)

// exports reads the export section of a WebAssembly binary: every export
// by name and kind, whatever its kind (wazero's compiled module lists
// functions and memories only, and a monitor module may export nothing
// else). It checks the framing of the sections it skips, not their
// contents: compiling the module does that.
func exports(code []byte) ([]export, error) {
	if len(code) < 8 || string(code[:8]) != "\x00asm\x01\x00\x00\x00" {
		return nil, fmt.Errorf("%w: not a WebAssembly 1.0 binary", ErrModule)
	}
	b := code[8:]
	var out []export
	seen := false
	for len(b) > 0 {
		id := b[0]
		size, n := binary.Uvarint(b[1:])
		if n <= 0 || size > uint64(len(b)-1-n) {
			return nil, fmt.Errorf("%w: section %d overruns the module", ErrModule, id)
		}
		body := b[1+n : 1+n+int(size)]
		b = b[1+n+int(size):]
		if id != 7 {
			continue
		}
		if seen {
			return nil, fmt.Errorf("%w: two export sections", ErrModule)
		}
		seen = true
		count, n := binary.Uvarint(body)
		if n <= 0 || count > maxExports {
			return nil, fmt.Errorf("%w: export count unreadable or over %d", ErrModule, maxExports)
		}
		body = body[n:]
		for range count {
			l, n := binary.Uvarint(body)
			if n <= 0 || l > maxExportName || l > uint64(len(body)-n) {
				return nil, fmt.Errorf("%w: export name overruns its section", ErrModule)
			}
			name := string(body[n : n+int(l)])
			body = body[n+int(l):]
			if len(body) < 1 {
				return nil, fmt.Errorf("%w: export %q has no kind", ErrModule, name)
			}
			kind := body[0]
			if _, n := binary.Uvarint(body[1:]); n <= 0 {
				return nil, fmt.Errorf("%w: export %q has no index", ErrModule, name)
			} else {
				body = body[1+n:]
			}
			out = append(out, export{name: name, kind: kind})
		}
		if len(body) != 0 {
			return nil, fmt.Errorf("%w: %d bytes after the exports", ErrModule, len(body))
		}
	}
	return out, nil
}

func kindName(k byte) string {
	switch k {
	case kindFunc:
		return "function"
	case kindTable:
		return "table"
	case kindMemory:
		return "memory"
	case kindGlobal:
		return "global"
	case kindTag:
		return "tag"
	}
	return fmt.Sprintf("kind %d", k)
}
