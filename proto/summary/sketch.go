package summary

import (
	"errors"
	"fmt"
	"math"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// RelativeAccuracy is the latency sketch's fixed relative accuracy: every
// quantile it answers is within 1% of the true value. Sketches merge only
// with equal accuracy, so it never changes within a protocol version.
const RelativeAccuracy = 0.01

// ErrMismatch is returned when two summaries (or a summary and a baseline)
// cannot be merged or compared: different models, releases, bins or sketch
// accuracies.
var ErrMismatch = errors.New("summaries do not match")

var latencyMapping = func() mapping.IndexMapping {
	m, err := mapping.NewLogarithmicMapping(RelativeAccuracy)
	if err != nil {
		panic(err)
	}
	return m
}()

// Sketch is a latency sketch being filled: a DDSketch with a logarithmic
// mapping and an unbounded dense store. Latencies are non-negative.
type Sketch struct {
	s   *ddsketch.DDSketch
	sum float64
}

// NewSketch returns an empty latency sketch.
func NewSketch() *Sketch {
	return &Sketch{s: ddsketch.NewDDSketch(latencyMapping, store.NewDenseStore(), store.NewDenseStore())}
}

// Add records one latency in milliseconds; negative or non-finite values
// are clamped to 0 (they can only come from a broken clock).
func (k *Sketch) Add(ms float64) {
	if !(ms >= 0) || math.IsInf(ms, 0) {
		ms = 0
	}
	_ = k.s.Add(ms) // only fails for values the mapping cannot index, which we clamp away
	k.sum += ms
}

// Proto returns the sketch in its wire form.
func (k *Sketch) Proto() *pb.LatencySketch {
	out := &pb.LatencySketch{RelativeAccuracy: RelativeAccuracy, Sum: k.sum}
	out.ZeroCount = uint64(k.s.GetZeroCount())
	pos := k.s.GetPositiveValueStore()
	if pos.IsEmpty() {
		return out
	}
	lo, _ := pos.MinIndex()
	hi, _ := pos.MaxIndex()
	out.Offset = int32(lo)
	out.Counts = make([]uint64, hi-lo+1)
	pos.ForEach(func(index int, count float64) bool {
		out.Counts[index-lo] += uint64(count)
		return false
	})
	return out
}

// sketchFromProto rebuilds a DDSketch from the wire form, for quantiles.
func sketchFromProto(l *pb.LatencySketch) (*ddsketch.DDSketch, error) {
	if a := l.GetRelativeAccuracy(); len(l.GetCounts()) > 0 && a != RelativeAccuracy {
		return nil, fmt.Errorf("%w: latency sketch accuracy %v, want %v", ErrMismatch, a, RelativeAccuracy)
	}
	pos := store.NewDenseStore()
	for i, c := range l.GetCounts() {
		if c > 0 {
			pos.AddWithCount(int(l.GetOffset())+i, float64(c))
		}
	}
	s := ddsketch.NewDDSketch(latencyMapping, pos, store.NewDenseStore())
	if z := l.GetZeroCount(); z > 0 {
		// The zero bucket: AddWithCount(0, n) lands there.
		if err := s.AddWithCount(0, float64(z)); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Quantile returns the q-quantile (0..1) of a latency sketch, within the
// relative accuracy, and false when the sketch is empty.
func Quantile(l *pb.LatencySketch, q float64) (float64, bool) {
	s, err := sketchFromProto(l)
	if err != nil || s.IsEmpty() {
		return 0, false
	}
	v, err := s.GetValueAtQuantile(q)
	return v, err == nil
}

// SketchCount is the number of values in a latency sketch.
func SketchCount(l *pb.LatencySketch) uint64 {
	n := l.GetZeroCount()
	for _, c := range l.GetCounts() {
		n += c
	}
	return n
}

// mergeSketch adds two sketches bin by bin: exact, as DDSketch's own merge
// is, and without floating-point counts.
func mergeSketch(a, b *pb.LatencySketch) (*pb.LatencySketch, error) {
	if len(a.GetCounts()) == 0 && len(b.GetCounts()) == 0 {
		if a == nil && b == nil {
			return nil, nil
		}
		return &pb.LatencySketch{RelativeAccuracy: RelativeAccuracy, ZeroCount: a.GetZeroCount() + b.GetZeroCount(), Sum: a.GetSum() + b.GetSum()}, nil
	}
	for _, l := range []*pb.LatencySketch{a, b} {
		if len(l.GetCounts()) > 0 && l.GetRelativeAccuracy() != RelativeAccuracy {
			return nil, fmt.Errorf("%w: latency sketch accuracy %v, want %v", ErrMismatch, l.GetRelativeAccuracy(), RelativeAccuracy)
		}
	}
	lo, hi := int64(math.MaxInt32), int64(math.MinInt32)
	for _, l := range []*pb.LatencySketch{a, b} {
		if n := len(l.GetCounts()); n > 0 {
			lo = min(lo, int64(l.GetOffset()))
			hi = max(hi, int64(l.GetOffset())+int64(n))
		}
	}
	if hi-lo > pb.MaxSketchBins {
		return nil, fmt.Errorf("%w: merged latency sketch spans %d bins, over %d", ErrMismatch, hi-lo, pb.MaxSketchBins)
	}
	out := &pb.LatencySketch{
		RelativeAccuracy: RelativeAccuracy,
		Offset:           int32(lo),
		Counts:           make([]uint64, hi-lo),
		ZeroCount:        a.GetZeroCount() + b.GetZeroCount(),
		Sum:              a.GetSum() + b.GetSum(),
	}
	for _, l := range []*pb.LatencySketch{a, b} {
		off := int64(l.GetOffset()) - lo
		for i, c := range l.GetCounts() {
			out.Counts[off+int64(i)] += c
		}
	}
	return out, nil
}
