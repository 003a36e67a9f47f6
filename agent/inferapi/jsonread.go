package inferapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
)

// The inference request's JSON header is read in one pass by a small
// reader of our own instead of encoding/json: encoding/json validates the
// whole body, then decodes it by reflection, then the tensor data is
// scanned a third time; on the digits request that was ~85% of the
// decoder's time (docs/benchmarks.md). The reader accepts exactly JSON
// (RFC 8259; FuzzRequestReader checks it against encoding/json) and
// decodes the fields the way encoding/json did into inferRequest: keys
// matched case-insensitively, the last of a repeated key wins, null leaves
// a field empty, data and parameter values kept as their raw JSON.

// maxNesting bounds arrays and objects inside one another.
const maxNesting = 64

type jsonReader struct {
	b []byte
	i int
}

func (r *jsonReader) fail(format string, args ...any) error {
	return badf("request is not a valid inference request: %s (at byte %d)", fmt.Sprintf(format, args...), r.i)
}

func (r *jsonReader) ws() {
	for r.i < len(r.b) {
		switch r.b[r.i] {
		case ' ', '\t', '\n', '\r':
			r.i++
		default:
			return
		}
	}
}

// peek is the next byte after white space, 0 at the end.
func (r *jsonReader) peek() byte {
	r.ws()
	if r.i < len(r.b) {
		return r.b[r.i]
	}
	return 0
}

// peekAt skips white space and returns the position.
func (r *jsonReader) peekAt() int {
	r.ws()
	return r.i
}

func (r *jsonReader) expect(c byte) error {
	if r.peek() != c {
		if r.i >= len(r.b) {
			return r.fail("unexpected end, want %q", c)
		}
		return r.fail("%q, want %q", r.b[r.i], c)
	}
	r.i++
	return nil
}

// null consumes a null if one is next.
func (r *jsonReader) null() (bool, error) {
	if r.peek() != 'n' {
		return false, nil
	}
	if !bytes.HasPrefix(r.b[r.i:], []byte("null")) {
		return false, r.fail("invalid literal")
	}
	r.i += 4
	return true, nil
}

// rawString reads a string and returns its bytes between the quotes, and
// whether they hold escapes.
func (r *jsonReader) rawString() ([]byte, bool, error) {
	if err := r.expect('"'); err != nil {
		return nil, false, err
	}
	start, esc := r.i, false
	for r.i < len(r.b) {
		c := r.b[r.i]
		switch {
		case c == '"':
			s := r.b[start:r.i]
			r.i++
			return s, esc, nil
		case c == '\\':
			esc = true
			if r.i+1 >= len(r.b) {
				return nil, false, r.fail("unterminated string")
			}
			switch r.b[r.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				r.i += 2
			case 'u':
				if r.i+6 > len(r.b) {
					return nil, false, r.fail("unterminated string")
				}
				for _, h := range r.b[r.i+2 : r.i+6] {
					if !isHex(h) {
						return nil, false, r.fail("invalid \\u escape")
					}
				}
				r.i += 6
			default:
				return nil, false, r.fail("invalid escape")
			}
		case c < 0x20:
			return nil, false, r.fail("control character in a string")
		default:
			r.i++
		}
	}
	return nil, false, r.fail("unterminated string")
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

// strInto reads a string value into dst; null leaves dst as it is.
func (r *jsonReader) strInto(dst *string) error {
	if ok, err := r.null(); ok || err != nil {
		return err
	}
	s, err := r.str()
	if err == nil {
		*dst = s
	}
	return err
}

// str reads a string.
func (r *jsonReader) str() (string, error) {
	start := r.peekAt()
	raw, esc, err := r.rawString()
	if err != nil {
		return "", err
	}
	if !esc {
		return string(raw), nil
	}
	var s string // rare: let encoding/json unescape it
	if err := json.Unmarshal(r.b[start:r.i], &s); err != nil {
		return "", r.fail("%v", err)
	}
	return s, nil
}

// number reads a JSON number and returns its text.
func (r *jsonReader) number() ([]byte, error) {
	r.ws()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	switch {
	case r.i < len(r.b) && r.b[r.i] == '0':
		r.i++
	case r.i < len(r.b) && r.b[r.i] >= '1' && r.b[r.i] <= '9':
		r.digits()
	default:
		return nil, r.fail("invalid number")
	}
	if r.i < len(r.b) && r.b[r.i] == '.' {
		r.i++
		if !r.digits() {
			return nil, r.fail("invalid number")
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if !r.digits() {
			return nil, r.fail("invalid number")
		}
	}
	return r.b[start:r.i], nil
}

func (r *jsonReader) digits() bool {
	start := r.i
	for r.i < len(r.b) && r.b[r.i] >= '0' && r.b[r.i] <= '9' {
		r.i++
	}
	return r.i > start
}

// skip reads any value and returns its raw bytes.
func (r *jsonReader) skip() ([]byte, error) {
	r.ws()
	start := r.i
	var stack [maxNesting]byte // the closing bracket of each open container
	depth := 0
	for {
		// A value.
		switch c := r.peek(); {
		case c == '{' || c == '[':
			if depth == maxNesting {
				return nil, r.fail("nested more than %d deep", maxNesting)
			}
			r.i++
			stack[depth] = c + 2 // '{'+2 == '}', '['+2 == ']'
			depth++
			if r.peek() == stack[depth-1] {
				r.i++
				depth--
				break
			}
			if c == '{' {
				if err := r.key(); err != nil {
					return nil, err
				}
			}
			continue
		case c == '"':
			if _, _, err := r.rawString(); err != nil {
				return nil, err
			}
		case c == 't' || c == 'f' || c == 'n':
			lit := "null"
			switch c {
			case 't':
				lit = "true"
			case 'f':
				lit = "false"
			}
			if !bytes.HasPrefix(r.b[r.i:], []byte(lit)) {
				return nil, r.fail("invalid literal")
			}
			r.i += len(lit)
		case c == '-' || c >= '0' && c <= '9':
			if _, err := r.number(); err != nil {
				return nil, err
			}
		case c == 0:
			return nil, r.fail("unexpected end")
		default:
			return nil, r.fail("unexpected %q", c)
		}
		// After a value: close containers, or go on to the next element.
		for {
			if depth == 0 {
				return r.b[start:r.i], nil
			}
			c := r.peek()
			if c == stack[depth-1] {
				r.i++
				depth--
				continue
			}
			if c != ',' {
				return nil, r.fail("unexpected %q after a value", c)
			}
			r.i++
			if stack[depth-1] == '}' {
				if err := r.key(); err != nil {
					return nil, err
				}
			}
			break
		}
	}
}

// key reads an object key and its colon.
func (r *jsonReader) key() error {
	if _, _, err := r.rawString(); err != nil {
		return err
	}
	return r.expect(':')
}

// object reads an object, calling member for each key with the reader at
// its value, which member must read. null reads as an empty object.
func (r *jsonReader) object(member func(key string) error) error {
	if ok, err := r.null(); ok || err != nil {
		return err
	}
	if err := r.expect('{'); err != nil {
		return err
	}
	if r.peek() == '}' {
		r.i++
		return nil
	}
	for {
		k, err := r.str()
		if err != nil {
			return err
		}
		if err := r.expect(':'); err != nil {
			return err
		}
		if err := member(k); err != nil {
			return err
		}
		switch r.peek() {
		case ',':
			r.i++
		case '}':
			r.i++
			return nil
		default:
			return r.fail("want ',' or '}' in an object")
		}
	}
}

// array reads an array, calling elem with the reader at each element.
// null reads as an empty array; it reports whether it was null.
func (r *jsonReader) array(elem func() error) (null bool, err error) {
	if ok, err := r.null(); ok || err != nil {
		return ok, err
	}
	if err := r.expect('['); err != nil {
		return false, err
	}
	if r.peek() == ']' {
		r.i++
		return false, nil
	}
	for {
		if err := elem(); err != nil {
			return false, err
		}
		switch r.peek() {
		case ',':
			r.i++
		case ']':
			r.i++
			return false, nil
		default:
			return false, r.fail("want ',' or ']' in an array")
		}
	}
}

// params reads a parameters object into p (merged, as encoding/json
// does with a map): each value kept raw. null gives nil.
func (r *jsonReader) params(p parameters) (parameters, error) {
	if ok, err := r.null(); ok || err != nil {
		return nil, err
	}
	if p == nil {
		p = parameters{}
	}
	err := r.object(func(k string) error {
		v, err := r.skip()
		if err != nil {
			return err
		}
		p[k] = v
		return nil
	})
	return p, err
}

// shape reads an array of integers (null: nil).
func (r *jsonReader) shape() ([]int64, error) {
	out := make([]int64, 0, 4)
	null, err := r.array(func() error {
		if len(out) == maxNesting {
			return r.fail("shape of more than %d dimensions", maxNesting)
		}
		tok, err := r.number()
		if err != nil {
			return err
		}
		v, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			return r.fail("shape dimension %s is not an int64", tok)
		}
		out = append(out, v)
		return nil
	})
	if null {
		return nil, err
	}
	return out, err
}

// readRequest decodes an inference request's JSON header.
func readRequest(b []byte) (inferRequest, error) {
	var req inferRequest
	r := &jsonReader{b: b}
	switch r.peek() {
	case '{':
	case 'n': // null decodes to an empty request, as with encoding/json
	default:
		return req, r.fail("not a JSON object")
	}
	err := r.object(func(k string) error {
		var err error
		switch {
		case eqFold(k, "id"):
			err = r.strInto(&req.ID)
		case eqFold(k, "parameters"):
			req.Parameters, err = r.params(req.Parameters)
		case eqFold(k, "inputs"):
			req.Inputs = make([]requestInput, 0, 1)
			var null bool
			null, err = r.array(func() error {
				in, err := r.input()
				req.Inputs = append(req.Inputs, in)
				return err
			})
			if null {
				req.Inputs = nil
			}
		case eqFold(k, "outputs"):
			req.Outputs = []requestOutput{}
			var null bool
			null, err = r.array(func() error {
				var o requestOutput
				err := r.object(func(k string) error {
					var err error
					switch {
					case eqFold(k, "name"):
						err = r.strInto(&o.Name)
					case eqFold(k, "parameters"):
						o.Parameters, err = r.params(o.Parameters)
					default:
						_, err = r.skip()
					}
					return err
				})
				req.Outputs = append(req.Outputs, o)
				return err
			})
			if null {
				req.Outputs = nil
			}
		default:
			_, err = r.skip()
		}
		return err
	})
	if err != nil {
		return req, err
	}
	if r.ws(); r.i != len(r.b) {
		return req, r.fail("data after the request")
	}
	return req, nil
}

// input reads one element of inputs.
func (r *jsonReader) input() (requestInput, error) {
	var in requestInput
	err := r.object(func(k string) error {
		var err error
		switch {
		case eqFold(k, "name"):
			err = r.strInto(&in.Name)
		case eqFold(k, "shape"):
			in.Shape, err = r.shape()
		case eqFold(k, "datatype"):
			err = r.strInto(&in.Datatype)
		case eqFold(k, "parameters"):
			in.Parameters, err = r.params(in.Parameters)
		case eqFold(k, "data"):
			in.Data, err = r.skip()
		default:
			_, err = r.skip()
		}
		return err
	})
	return in, err
}

// eqFold compares a key with a lower-case field name, ignoring ASCII case
// (encoding/json's matching, less its Unicode folding).
func eqFold(k, field string) bool {
	if len(k) != len(field) {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != field[i] {
			return false
		}
	}
	return true
}
