package inferapi

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/flotilla-edge/flotilla/runtime"
)

// encodeResponse writes the inference response: the JSON header, and the
// binary part (outputs asked for as binary) to append after it.
func encodeResponse(model, version string, d *decoded, outs []runtime.Tensor) (header, bin []byte, err error) {
	chosen := outs
	binOut := make([]bool, len(outs))
	if len(d.outputs) > 0 {
		byName := make(map[string]runtime.Tensor, len(outs))
		for _, o := range outs {
			byName[o.Name] = o
		}
		chosen = chosen[:0:0]
		binOut = binOut[:0]
		for _, w := range d.outputs {
			o, ok := byName[w.name]
			if !ok {
				return nil, nil, fmt.Errorf("the model gave no output %q", w.name)
			}
			chosen = append(chosen, o)
			binOut = append(binOut, w.binary)
		}
	} else if d.binaryOutputs {
		for i := range binOut {
			binOut[i] = true
		}
	}
	b := make([]byte, 0, 256+estimate(chosen, binOut))
	b = append(b, `{"model_name":`...)
	b = appendJSONString(b, model)
	b = append(b, `,"model_version":`...)
	b = appendJSONString(b, version)
	if d.id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, d.id)
	}
	b = append(b, `,"outputs":[`...)
	for i, o := range chosen {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendJSONString(b, o.Name)
		b = append(b, `,"datatype":"`...)
		b = append(b, dtypeName(o.DType)...)
		b = append(b, `","shape":[`...)
		for j, s := range o.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, s, 10)
		}
		b = append(b, ']')
		if len(d.outputs) > 0 && d.outputs[i].shm != nil {
			sh := d.outputs[i].shm
			b = append(b, `,"parameters":{"shared_memory_region":`...)
			b = appendJSONString(b, sh.region)
			b = append(b, `,"shared_memory_byte_size":`...)
			b = strconv.AppendInt(b, sh.size, 10)
			if sh.offset != 0 {
				b = append(b, `,"shared_memory_offset":`...)
				b = strconv.AppendInt(b, sh.offset, 10)
			}
			b = append(b, "}}"...)
			continue
		}
		if binOut[i] {
			raw := o.Data
			if o.DType == runtime.String {
				raw = joinBytes(o.Strings)
			}
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(len(raw)), 10)
			b = append(b, "}}"...)
			bin = append(bin, raw...)
			continue
		}
		b = append(b, `,"data":[`...)
		if b, err = appendData(b, o); err != nil {
			return nil, nil, err
		}
		b = append(b, "]}"...)
	}
	b = append(b, "]}"...)
	return b, bin, nil
}

func estimate(ts []runtime.Tensor, bin []bool) int {
	n := 0
	for i, t := range ts {
		if !bin[i] {
			n += len(t.Data) * 3
		}
	}
	return n
}

func joinBytes(ss []string) []byte {
	var b []byte
	for _, s := range ss {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// appendJSONString appends s as a JSON string: as it is when nothing in it
// needs escaping (model names, versions, tensor names), else as
// encoding/json escapes it.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c >= 0x80 {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendData appends a tensor's elements as flat JSON values.
func appendData(b []byte, t runtime.Tensor) ([]byte, error) {
	if t.DType == runtime.String {
		for i, s := range t.Strings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return b, nil
	}
	size := t.DType.Size()
	if size == 0 || len(t.Data)%size != 0 {
		return nil, fmt.Errorf("output %q: %d bytes of %v", t.Name, len(t.Data), t.DType)
	}
	le := binary.LittleEndian
	for i := 0; i < len(t.Data); i += size {
		if i > 0 {
			b = append(b, ',')
		}
		p := t.Data[i:]
		switch t.DType {
		case runtime.Float32:
			b = appendFloat(b, float64(math.Float32frombits(le.Uint32(p))), 32)
		case runtime.Float64:
			b = appendFloat(b, math.Float64frombits(le.Uint64(p)), 64)
		case runtime.Float16:
			b = appendFloat(b, float64(halfToFloat(le.Uint16(p))), 32)
		case runtime.BFloat16:
			b = appendFloat(b, float64(math.Float32frombits(uint32(le.Uint16(p))<<16)), 32)
		case runtime.Bool:
			b = strconv.AppendBool(b, p[0] != 0)
		case runtime.Int8:
			b = strconv.AppendInt(b, int64(int8(p[0])), 10)
		case runtime.Int16:
			b = strconv.AppendInt(b, int64(int16(le.Uint16(p))), 10)
		case runtime.Int32:
			b = strconv.AppendInt(b, int64(int32(le.Uint32(p))), 10)
		case runtime.Int64:
			b = strconv.AppendInt(b, int64(le.Uint64(p)), 10)
		case runtime.Uint8:
			b = strconv.AppendUint(b, uint64(p[0]), 10)
		case runtime.Uint16:
			b = strconv.AppendUint(b, uint64(le.Uint16(p)), 10)
		case runtime.Uint32:
			b = strconv.AppendUint(b, uint64(le.Uint32(p)), 10)
		case runtime.Uint64:
			b = strconv.AppendUint(b, le.Uint64(p), 10)
		}
	}
	return b, nil
}

// appendFloat writes JSON numbers; JSON has no NaN or infinity, so those
// become null.
func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}

// halfToFloat converts an IEEE 754 binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0:
		f := float32(frac) / (1 << 24)
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}
