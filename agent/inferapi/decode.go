package inferapi

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/flotilla-edge/flotilla/runtime"
)

// errBadRequest marks what the client got wrong: answered 400.
var errBadRequest = errors.New("bad request")

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{errBadRequest}, args...)...)
}

type inferRequest struct {
	ID         string          `json:"id,omitempty"`
	Parameters parameters      `json:"parameters,omitempty"`
	Inputs     []requestInput  `json:"inputs"`
	Outputs    []requestOutput `json:"outputs,omitempty"`
}

type requestInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   string          `json:"datatype"`
	Parameters parameters      `json:"parameters,omitempty"`
	Data       json.RawMessage `json:"data,omitempty"`
}

type requestOutput struct {
	Name       string     `json:"name"`
	Parameters parameters `json:"parameters,omitempty"`
}

type parameters map[string]json.RawMessage

func (p parameters) bool(key string) bool {
	v, ok := p[key]
	return ok && bytes.Equal(bytes.TrimSpace(v), []byte("true"))
}

func (p parameters) int(key string) (int64, bool, error) {
	v, ok := p[key]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	if err != nil || n < 0 {
		return 0, true, badf("parameter %s is not a size: %s", key, v)
	}
	return n, true, nil
}

// wantOutput is an output the client asked for.
type wantOutput struct {
	name   string
	binary bool
	shm    *shmInput // to write into a shared memory region; nil: in the response
}

// decoded is a request checked against the model.
type decoded struct {
	id            string
	inputs        []runtime.Tensor
	outputs       []wantOutput // empty: all, as JSON unless binaryOutputs
	binaryOutputs bool
	shm           []shmInput // inputs to read from shared memory
	pooled        [][]byte   // input buffers from inputBufs, returned after the call (recycle)
}

// Limits bound what one request may ask for.
type Limits struct {
	MaxInputs   int   // tensors per request (default 64)
	MaxElements int64 // elements per tensor (default 64 Mi)
	MaxRank     int   // dimensions per tensor (default 8)
}

func (l Limits) withDefaults() Limits {
	if l.MaxInputs <= 0 {
		l.MaxInputs = 64
	}
	if l.MaxElements <= 0 {
		l.MaxElements = 64 << 20
	}
	if l.MaxRank <= 0 {
		l.MaxRank = 8
	}
	return l
}

// decodeRequest parses an inference request — its JSON header and, with
// the binary tensor extension, the binary part after it — and checks it
// against the model's inputs and outputs. Every error wraps errBadRequest
// and names what is wrong.
func decodeRequest(header, bin []byte, ins, outs []runtime.TensorInfo, lim Limits) (*decoded, error) {
	req, err := readRequest(header)
	if err != nil {
		return nil, err
	}
	if len(req.Inputs) == 0 {
		return nil, badf("request has no inputs")
	}
	if len(req.Inputs) > lim.MaxInputs {
		return nil, badf("request has %d inputs, at most %d", len(req.Inputs), lim.MaxInputs)
	}
	d := &decoded{id: req.ID, binaryOutputs: req.Parameters.bool("binary_data_output")}
	byName := make(map[string]runtime.TensorInfo, len(ins))
	for _, in := range ins {
		byName[in.Name] = in
	}
	seen := map[string]bool{}
	for _, in := range req.Inputs {
		info, ok := byName[in.Name]
		switch {
		case !ok:
			return nil, badf("unknown input %q (the model takes %s)", in.Name, names(ins))
		case seen[in.Name]:
			return nil, badf("input %q given twice", in.Name)
		}
		seen[in.Name] = true
		t, rest, sh, err := decodeInput(in, info, bin, lim)
		if err != nil {
			return nil, err
		}
		bin = rest
		if sh != nil {
			sh.index = len(d.inputs)
			d.shm = append(d.shm, *sh)
		}
		d.inputs = append(d.inputs, t)
	}
	if len(bin) != 0 {
		return nil, badf("%d bytes of binary data are not claimed by any input", len(bin))
	}
	for _, in := range ins {
		if !seen[in.Name] {
			return nil, badf("input %q is missing", in.Name)
		}
	}
	outNames := map[string]bool{}
	for _, o := range outs {
		outNames[o.Name] = true
	}
	for _, o := range req.Outputs {
		if !outNames[o.Name] {
			return nil, badf("unknown output %q (the model gives %s)", o.Name, names(outs))
		}
		w := wantOutput{name: o.Name, binary: o.Parameters.bool("binary_data") || d.binaryOutputs}
		region, off, size, ok, err := shmParams("output", o.Name, o.Parameters)
		if err != nil {
			return nil, err
		}
		if ok {
			w.shm, w.binary = &shmInput{index: len(d.outputs), region: region, offset: off, size: size}, false
		}
		d.outputs = append(d.outputs, w)
	}
	return d, nil
}

func names(ts []runtime.TensorInfo) string {
	var b bytes.Buffer
	for i, t := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%q %s%v", t.Name, dtypeName(t.DType), t.Shape)
	}
	return b.String()
}

// decodeInput checks one input against its schema and decodes its data,
// from JSON or from the front of bin; it returns the rest of bin. An
// input in shared memory is returned without its data, described by the
// *shmInput.
func decodeInput(in requestInput, info runtime.TensorInfo, bin []byte, lim Limits) (runtime.Tensor, []byte, *shmInput, error) {
	dt, ok := dtypeByName[in.Datatype]
	if !ok {
		return runtime.Tensor{}, nil, nil, badf("input %q: unknown datatype %q", in.Name, in.Datatype)
	}
	if dt != info.DType {
		return runtime.Tensor{}, nil, nil, badf("input %q: datatype %s, the model wants %s", in.Name, in.Datatype, dtypeName(info.DType))
	}
	if in.Shape == nil {
		return runtime.Tensor{}, nil, nil, badf("input %q: shape is missing", in.Name)
	}
	if len(in.Shape) > lim.MaxRank {
		return runtime.Tensor{}, nil, nil, badf("input %q: rank %d, at most %d", in.Name, len(in.Shape), lim.MaxRank)
	}
	if len(info.Shape) > 0 && len(in.Shape) != len(info.Shape) {
		return runtime.Tensor{}, nil, nil, badf("input %q: shape %v, the model wants %v", in.Name, in.Shape, info.Shape)
	}
	n := int64(1)
	for i, dim := range in.Shape {
		if dim < 0 {
			return runtime.Tensor{}, nil, nil, badf("input %q: shape %v has a negative dimension", in.Name, in.Shape)
		}
		if i < len(info.Shape) && info.Shape[i] >= 0 && info.Shape[i] != dim {
			return runtime.Tensor{}, nil, nil, badf("input %q: shape %v, the model wants %v", in.Name, in.Shape, info.Shape)
		}
		if dim != 0 && n > lim.MaxElements/dim {
			return runtime.Tensor{}, nil, nil, badf("input %q: shape %v has more than %d elements", in.Name, in.Shape, lim.MaxElements)
		}
		n *= dim
	}
	t := runtime.Tensor{Name: in.Name, DType: dt, Shape: in.Shape}
	if region, off, size, ok, err := shmParams("input", in.Name, in.Parameters); err != nil || ok {
		if err != nil {
			return runtime.Tensor{}, nil, nil, err
		}
		if _, hasBin := in.Parameters["binary_data_size"]; hasBin || len(in.Data) > 0 {
			return runtime.Tensor{}, nil, nil, badf("input %q: shared_memory_region with data or binary_data_size", in.Name)
		}
		if want := n * int64(dt.Size()); dt != runtime.String && want != size {
			return runtime.Tensor{}, nil, nil, badf("input %q: shape %v of %s needs %d bytes, shared_memory_byte_size is %d", in.Name, in.Shape, in.Datatype, want, size)
		}
		return t, bin, &shmInput{region: region, offset: off, size: size, elements: n}, nil
	}
	size, isBinary, err := in.Parameters.int("binary_data_size")
	if err != nil {
		return runtime.Tensor{}, nil, nil, fmt.Errorf("input %q: %w", in.Name, err)
	}
	if isBinary {
		if len(in.Data) > 0 {
			return runtime.Tensor{}, nil, nil, badf("input %q: both data and binary_data_size", in.Name)
		}
		if size > int64(len(bin)) {
			return runtime.Tensor{}, nil, nil, badf("input %q: binary_data_size %d, only %d bytes left", in.Name, size, len(bin))
		}
		raw := bin[:size]
		if dt == runtime.String {
			if t.Strings, err = splitBytes(in.Name, raw, n); err != nil {
				return runtime.Tensor{}, nil, nil, err
			}
		} else {
			if want := n * int64(dt.Size()); want != size {
				return runtime.Tensor{}, nil, nil, badf("input %q: shape %v of %s needs %d bytes, binary_data_size is %d", in.Name, in.Shape, in.Datatype, want, size)
			}
			t.Data = raw
		}
		return t, bin[size:], nil, nil
	}
	if len(in.Data) == 0 {
		return runtime.Tensor{}, nil, nil, badf("input %q: data is missing", in.Name)
	}
	if err := parseData(&t, in.Data, n); err != nil {
		return runtime.Tensor{}, nil, nil, err
	}
	return t, bin, nil, nil
}

// splitBytes splits the binary form of a BYTES tensor: each element a
// 4-byte little-endian length and the bytes.
func splitBytes(name string, raw []byte, n int64) ([]string, error) {
	out := make([]string, 0, min(n, int64(len(raw)/4)))
	for len(raw) > 0 {
		if len(raw) < 4 {
			return nil, badf("input %q: truncated BYTES element", name)
		}
		l := binary.LittleEndian.Uint32(raw)
		if uint64(l) > uint64(len(raw)-4) {
			return nil, badf("input %q: BYTES element of %d bytes, only %d left", name, l, len(raw)-4)
		}
		out = append(out, string(raw[4:4+l]))
		raw = raw[4+l:]
	}
	if int64(len(out)) != n {
		return nil, badf("input %q: shape holds %d elements, binary data has %d", name, n, len(out))
	}
	return out, nil
}

// parseData decodes JSON data — flat or nested arrays, row-major — into
// t, which must hold exactly n elements.
func parseData(t *runtime.Tensor, raw []byte, n int64) error {
	size := t.DType.Size()
	if t.DType != runtime.String {
		t.Data = make([]byte, 0, n*int64(size))
	}
	var count int64
	depth := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '[':
			depth++
			i++
			continue
		case c == ']':
			depth--
			i++
			continue
		case c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t':
			i++
			continue
		}
		if depth == 0 && count == 0 && n == 1 {
			depth = -1 // a bare scalar for a one-element tensor
		} else if depth <= 0 {
			return badf("input %q: data is not an array", t.Name)
		}
		if count == n {
			return badf("input %q: shape %v holds %d elements, data has more", t.Name, t.Shape, n)
		}
		var end int
		var err error
		if c == '"' {
			end, err = appendString(t, raw, i)
		} else {
			end = i
			for end < len(raw) && !isDelim(raw[end]) {
				end++
			}
			err = appendValue(t, raw[i:end])
		}
		if err != nil {
			return err
		}
		count++
		i = end
		if depth == -1 {
			depth = 0
		}
	}
	if count != n {
		return badf("input %q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, count)
	}
	return nil
}

func isDelim(c byte) bool {
	return c == ',' || c == ']' || c == '[' || c == ' ' || c == '\n' || c == '\r' || c == '\t'
}

func appendString(t *runtime.Tensor, raw []byte, i int) (int, error) {
	if t.DType != runtime.String {
		return 0, badf("input %q: a string in %s data", t.Name, dtypeName(t.DType))
	}
	end := i + 1
	for end < len(raw) && raw[end] != '"' {
		if raw[end] == '\\' {
			end++
		}
		end++
	}
	if end >= len(raw) {
		return 0, badf("input %q: unterminated string", t.Name)
	}
	end++
	var s string
	if err := json.Unmarshal(raw[i:end], &s); err != nil {
		return 0, badf("input %q: %v", t.Name, err)
	}
	t.Strings = append(t.Strings, s)
	return end, nil
}

// appendValue appends one JSON scalar as t's type, little-endian.
// The string(tok) conversions are passed straight to strconv, which does
// not keep them, so they need no allocation; only an error copies tok.
func appendValue(t *runtime.Tensor, tok []byte) error {
	le := binary.LittleEndian
	bad := func(what string) error {
		return badf("input %q: %q is not %s", t.Name, tok, what)
	}
	switch t.DType {
	case runtime.String:
		return bad("a string")
	case runtime.Bool:
		switch string(tok) {
		case "true":
			t.Data = append(t.Data, 1)
		case "false":
			t.Data = append(t.Data, 0)
		default:
			return bad("true or false")
		}
	case runtime.Float32, runtime.Float16, runtime.BFloat16:
		f, err := strconv.ParseFloat(string(tok), 32)
		if err != nil {
			return bad("a number")
		}
		bits := math.Float32bits(float32(f))
		switch t.DType {
		case runtime.Float32:
			t.Data = le.AppendUint32(t.Data, bits)
		case runtime.Float16:
			t.Data = le.AppendUint16(t.Data, floatToHalf(float32(f)))
		default: // bfloat16, rounded to nearest even
			t.Data = le.AppendUint16(t.Data, uint16((bits+0x7fff+(bits>>16)&1)>>16))
		}
	case runtime.Float64:
		f, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return bad("a number")
		}
		t.Data = le.AppendUint64(t.Data, math.Float64bits(f))
	case runtime.Int8, runtime.Int16, runtime.Int32, runtime.Int64:
		bits := 8 * t.DType.Size()
		v, err := strconv.ParseInt(string(tok), 10, bits)
		if err != nil {
			return bad(fmt.Sprintf("an int%d", bits))
		}
		t.Data = appendInt(t.Data, uint64(v), t.DType.Size())
	case runtime.Uint8, runtime.Uint16, runtime.Uint32, runtime.Uint64:
		bits := 8 * t.DType.Size()
		v, err := strconv.ParseUint(string(tok), 10, bits)
		if err != nil {
			return bad(fmt.Sprintf("a uint%d", bits))
		}
		t.Data = appendInt(t.Data, v, t.DType.Size())
	default:
		return badf("input %q: datatype %v is not supported", t.Name, t.DType)
	}
	return nil
}

func appendInt(b []byte, v uint64, size int) []byte {
	switch size {
	case 1:
		return append(b, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return binary.LittleEndian.AppendUint64(b, v)
}

// floatToHalf converts to IEEE 754 binary16, rounding to nearest even.
func floatToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	mant := b & 0x7fffff
	switch {
	case b&0x7fffffff == 0:
		return sign
	case b>>23&0xff == 0xff: // Inf, NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp >= 0x1f:
		return sign | 0x7c00
	case exp <= 0: // subnormal or zero
		if exp < -10 {
			return sign
		}
		mant |= 0x800000
		shift := uint32(14 - exp)
		h := mant >> shift
		if rem := mant & (1<<shift - 1); rem > 1<<(shift-1) || rem == 1<<(shift-1) && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	h := uint32(exp)<<10 | mant>>13
	if rem := mant & 0x1fff; rem > 0x1000 || rem == 0x1000 && h&1 == 1 {
		h++
	}
	return sign | uint16(h)
}
