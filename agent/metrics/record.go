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

func encodeFeatures(f []float64, missing []bool) []byte {
	if len(f) > maxFeatures {
		f = f[:maxFeatures]
	}
	b := make([]byte, 8*len(f))
	for i, v := range f {
		bits := math.Float64bits(v)
		if i < len(missing) && missing[i] {
			bits = missingBits
		}
		binary.LittleEndian.PutUint64(b[8*i:], bits)
	}
	return b
}

func decodeFeatures(b []byte) ([]float64, []bool, error) {
	if len(b)%8 != 0 || len(b) > 8*maxFeatures {
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
