package metrics

import (
	"encoding/binary"
	"errors"
	"math"
)

// A run is several records of one model release and slot, all in one
// summary window, stored as one row of the runs table: one B-tree insert
// per run rather than per record (the insert was half the writer's CPU).
// The row keeps what its records share (model, release, version, slot,
// window), the earliest and latest record time and the record count; the records
// themselves are packed in its data blob, each as
//
//	uvarint  at − the row's window_ms (the window's start)
//	uvarint  latency in µs
//	byte     flags: 1 OK, 2 prediction, 4 features, 8 unsampled (features
//	         not computed: a sampling monitor function)
//	8 bytes  the prediction, float64 little-endian (flag 2)
//	uvarint  length, then the feature blob (flag 4; see appendFeatures)
//
// A run never spans a window boundary (the writer splits at it), so a
// window takes whole rows: those whose max_at_ms is before its end.
const (
	runOK = 1 << iota
	runPrediction
	runFeatures
	runUnsampled
)

// A run is closed at maxRunRecords records or once its blob passes
// maxRunBytes, so that evicting one row for the quota evicts a bounded
// number of records.
const (
	maxRunRecords = 128
	maxRunBytes   = 64 << 10
)

var errBadRun = errors.New("bad record run")

// runKey is what a run's records share.
type runKey struct {
	model, version, slot string
	release              uint64
	window               int64 // window start, ms
}

// run is a run being packed by the writer.
type run struct {
	key          runKey
	minAt, maxAt int64
	n            int
	data         []byte
}

// packer groups a batch's records into runs. It is the writer's: its
// buffers are reused from batch to batch.
type packer struct {
	window  int64 // ms
	runs    []run // runs[:open] are in use
	open    int
	last    int // the run the previous record went to, or -1
	scratch []byte
	bucket  map[runKey]int // the run open for each key
}

func (p *packer) reset() {
	for i := range p.runs[:p.open] {
		p.runs[i].data = p.runs[i].data[:0]
		p.runs[i].key = runKey{}
	}
	p.open, p.last = 0, -1
	clear(p.bucket)
}

// add packs r into the run open for its key, opening one if needed.
func (p *packer) add(r *Record) {
	at := r.At.UnixMilli()
	win := floorDiv(at, p.window) * p.window
	i := p.last
	if i < 0 || !p.runs[i].fits(r, win) {
		if p.bucket == nil {
			p.bucket = map[runKey]int{}
		}
		k := runKey{model: r.Model, version: r.Version, slot: r.Slot, release: r.Release, window: win}
		var found bool
		i, found = p.bucket[k]
		if !found || p.runs[i].full() {
			i = p.newRun(k)
			p.bucket[k] = i
		}
		p.last = i
	}
	ru := &p.runs[i]
	if ru.n == 0 {
		ru.minAt, ru.maxAt = at, at
	}
	ru.minAt, ru.maxAt = min(ru.minAt, at), max(ru.maxAt, at)
	ru.data = binary.AppendUvarint(ru.data, uint64(at-ru.key.window))
	ru.data = binary.AppendUvarint(ru.data, uint64(max(0, r.Latency.Microseconds())))
	flags := byte(0)
	if r.OK {
		flags |= runOK
	}
	if r.HasPrediction {
		flags |= runPrediction
	}
	if len(r.Features) > 0 {
		flags |= runFeatures
	}
	if r.Unsampled {
		flags |= runUnsampled
	}
	ru.data = append(ru.data, flags)
	if r.HasPrediction {
		ru.data = binary.LittleEndian.AppendUint64(ru.data, math.Float64bits(r.Predicted))
	}
	if len(r.Features) > 0 {
		p.scratch = appendFeatures(p.scratch[:0], r.Features, r.Missing)
		ru.data = binary.AppendUvarint(ru.data, uint64(len(p.scratch)))
		ru.data = append(ru.data, p.scratch...)
	}
	ru.n++
}

func (p *packer) newRun(k runKey) int {
	if p.open == len(p.runs) {
		p.runs = append(p.runs, run{})
	}
	i := p.open
	p.open++
	p.runs[i].key, p.runs[i].n, p.runs[i].data = k, 0, p.runs[i].data[:0]
	return i
}

func (ru *run) full() bool { return ru.n >= maxRunRecords || len(ru.data) >= maxRunBytes }

// fits says r belongs to this run and the run has room.
func (ru *run) fits(r *Record, win int64) bool {
	k := &ru.key
	return !ru.full() && k.window == win && k.release == r.Release && k.model == r.Model &&
		k.slot == r.Slot && k.version == r.Version
}

// recordSize is the length of one record's bytes after its time offset.
func recordSize(b []byte) (int, error) {
	_, k := binary.Uvarint(b)
	if k <= 0 || k >= len(b) {
		return 0, errBadRun
	}
	size := k + 1
	flags := b[k]
	if flags&^(runOK|runPrediction|runFeatures|runUnsampled) != 0 {
		return 0, errBadRun
	}
	if flags&runPrediction != 0 {
		size += 8
	}
	if flags&runFeatures != 0 {
		if size > len(b) {
			return 0, errBadRun
		}
		fl, k := binary.Uvarint(b[size:])
		if k <= 0 || fl > 8*maxFeatures+16 {
			return 0, errBadRun
		}
		size += k + int(fl)
	}
	if size > len(b) {
		return 0, errBadRun
	}
	return size, nil
}

// runRecord is one record as decoded from a run.
type runRecord struct {
	at            int64 // ms
	latencyUs     int64
	ok            bool
	features      []float64
	missing       []bool
	prediction    float64
	hasPrediction bool
	unsampled     bool
}

// decodeRun calls f with each of the run's n records. A record whose
// feature blob is damaged comes without features (it still counts as a
// request); a run whose structure is damaged stops at the damage and
// returns how many records it gave.
func decodeRun(data []byte, window int64, n int, f func(runRecord)) (int, error) {
	given := 0
	for given < n {
		off, k := binary.Uvarint(data)
		if k <= 0 || off > math.MaxInt64/2 {
			return given, errBadRun
		}
		data = data[k:]
		size, err := recordSize(data)
		if err != nil {
			return given, err
		}
		b := data[:size]
		data = data[size:]
		lat, k := binary.Uvarint(b)
		if lat > math.MaxInt64/2 {
			return given, errBadRun
		}
		flags := b[k]
		b = b[k+1:]
		r := runRecord{at: window + int64(off), latencyUs: int64(lat), ok: flags&runOK != 0, unsampled: flags&runUnsampled != 0}
		if flags&runPrediction != 0 {
			r.prediction, r.hasPrediction = math.Float64frombits(binary.LittleEndian.Uint64(b)), true
			b = b[8:]
		}
		if flags&runFeatures != 0 {
			_, k := binary.Uvarint(b)
			if f, m, err := decodeFeatures(b[k:]); err == nil {
				r.features, r.missing = f, m
			}
		}
		f(r)
		given++
	}
	if len(data) != 0 {
		return given, errBadRun
	}
	return given, nil
}
