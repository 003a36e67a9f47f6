package metrics

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Record is one inference as the agent served it.
type Record struct {
	Model     string
	Release   uint64
	Version   string
	Slot      string
	At        time.Time
	Latency   time.Duration
	OK        bool
	Features  []float64 // monitored features, in the baseline's order
	Missing   []bool    // optional: Missing[i] marks Features[i] as missing
	Predicted float64   // the monitored prediction, when HasPrediction
	// HasPrediction says Predicted is set.
	HasPrediction bool
	// Raw, when set, is the input row the writer computes Features from
	// (a release with a monitor function); Features is then left empty.
	Raw *RawInput
	// Unsampled says the monitor function was not run for this record (it
	// samples 1 in N): its features count neither as seen nor as missing.
	Unsampled bool
}

// Recorder is what the inference path calls once per inference. It never
// blocks.
type Recorder interface {
	Record(r Record)
}

// missingBits is the NaN payload that marks a missing feature in the
// stored blob, distinct from the NaN that arithmetic produces.
const missingBits = 0x7ff8_0000_0000_0bad

// maxFeatures bounds one record's features, as the baseline does.
const maxFeatures = 1024

var errBadBlob = errors.New("bad feature blob")

// The feature blob. Each record's features are stored in the narrowest of
// three element encodings that gives every value back bit for bit: one
// byte (whole numbers 0 to 255: pixels, counts, classes), float32 (values
// read from a float32 tensor) or float64 (anything else, and a missing
// feature's marker). The blob is the kind, the count as a uvarint, then
// the elements; a blob whose length would be a multiple of 8 gets one zero
// byte more, so that it is never taken for the layout before (n float64s,
// no header), which rows written by an older agent still have.
const (
	blobUint8   = 1
	blobFloat32 = 2
	blobFloat64 = 3
)

// appendFeatures appends the blob of f (missing[i] marks f[i] missing) to
// dst, and returns it. It allocates only when dst lacks room.
func appendFeatures(dst []byte, f []float64, missing []bool) []byte {
	if len(f) > maxFeatures {
		f = f[:maxFeatures]
	}
	kind := byte(blobUint8)
	for i, v := range f {
		if i < len(missing) && missing[i] {
			kind = blobFloat64
			break
		}
		bits := math.Float64bits(v)
		if kind == blobUint8 && (v < 0 || v > 255 || bits != math.Float64bits(float64(uint8(v)))) {
			kind = blobFloat32
		}
		if kind == blobFloat32 && bits != math.Float64bits(float64(float32(v))) {
			kind = blobFloat64
			break
		}
	}
	start := len(dst)
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(len(f)))
	le := binary.LittleEndian
	for i, v := range f {
		switch kind {
		case blobUint8:
			dst = append(dst, uint8(v))
		case blobFloat32:
			dst = le.AppendUint32(dst, math.Float32bits(float32(v)))
		default:
			bits := math.Float64bits(v)
			if i < len(missing) && missing[i] {
				bits = missingBits
			}
			dst = le.AppendUint64(dst, bits)
		}
	}
	if (len(dst)-start)%8 == 0 {
		dst = append(dst, 0)
	}
	return dst
}

func encodeFeatures(f []float64, missing []bool) []byte { return appendFeatures(nil, f, missing) }

func decodeFeatures(b []byte) ([]float64, []bool, error) {
	if len(b)%8 == 0 {
		return decodeLegacyFeatures(b)
	}
	kind := b[0]
	n, vl := binary.Uvarint(b[1:])
	if vl <= 0 || n > maxFeatures {
		return nil, nil, errBadBlob
	}
	var width int
	switch kind {
	case blobUint8:
		width = 1
	case blobFloat32:
		width = 4
	case blobFloat64:
		width = 8
	default:
		return nil, nil, errBadBlob
	}
	body := b[1+vl:]
	size := int(n) * width
	switch {
	case len(body) == size && (1+vl+size)%8 != 0:
	case len(body) == size+1 && (1+vl+size)%8 == 0 && body[size] == 0:
	default:
		return nil, nil, errBadBlob
	}
	f := make([]float64, n)
	var missing []bool
	le := binary.LittleEndian
	for i := range f {
		switch kind {
		case blobUint8:
			f[i] = float64(body[i])
		case blobFloat32:
			f[i] = float64(math.Float32frombits(le.Uint32(body[4*i:])))
		default:
			bits := le.Uint64(body[8*i:])
			if bits == missingBits {
				if missing == nil {
					missing = make([]bool, len(f))
				}
				missing[i] = true
			}
			f[i] = math.Float64frombits(bits)
		}
	}
	return f, missing, nil
}

// decodeLegacyFeatures decodes the blob as written before the compact
// encoding: n float64s.
func decodeLegacyFeatures(b []byte) ([]float64, []bool, error) {
	if len(b) > 8*maxFeatures {
		return nil, nil, errBadBlob
	}
	f := make([]float64, len(b)/8)
	var missing []bool
	for i := range f {
		bits := binary.LittleEndian.Uint64(b[8*i:])
		if bits == missingBits {
			if missing == nil {
				missing = make([]bool, len(f))
			}
			missing[i] = true
		}
		f[i] = math.Float64frombits(bits)
	}
	return f, missing, nil
}
