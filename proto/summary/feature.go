package summary

import (
	"fmt"
	"math"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// featureAcc accumulates one monitored value over a window.
type featureAcc struct {
	binner *Binner
	s      pb.FeatureSummary
}

func newFeatureAcc(f *pb.FeatureBaseline) *featureAcc {
	b := NewBinner(f)
	return &featureAcc{binner: b, s: pb.FeatureSummary{Name: f.GetName(), Bins: make([]uint64, b.Len())}}
}

// add records one observation: Welford's update for the moments over
// finite values; ±Inf in the under/overflow bins; NaN and missing in no
// bin.
func (a *featureAcc) add(v float64, present bool) {
	s := &a.s
	switch {
	case !present:
		s.Missing++
		return
	case math.IsNaN(v):
		s.Nan++
		return
	case math.IsInf(v, 1):
		s.PosInf++
	case math.IsInf(v, -1):
		s.NegInf++
	default:
		if s.Count == 0 {
			s.Min, s.Max = v, v
		} else {
			s.Min, s.Max = min(s.Min, v), max(s.Max, v)
		}
		s.Count++
		d := v - s.Mean
		s.Mean += d / float64(s.Count)
		s.M2 += d * (v - s.Mean)
	}
	s.Bins[a.binner.Bin(v)]++
}

// mergeFeature returns the summary of the union of a's and b's
// observations: counts and bins added exactly; moments by Chan et al.'s
// parallel formula (mean = mean_a + δ·n_b/n, M2 = M2_a + M2_b +
// δ²·n_a·n_b/n with δ = mean_b − mean_a).
func mergeFeature(a, b *pb.FeatureSummary) (*pb.FeatureSummary, error) {
	if a.GetName() != b.GetName() || len(a.GetBins()) != len(b.GetBins()) {
		return nil, fmt.Errorf("%w: feature %q with %d bins and %q with %d", ErrMismatch,
			a.GetName(), len(a.GetBins()), b.GetName(), len(b.GetBins()))
	}
	out := &pb.FeatureSummary{
		Name:    a.GetName(),
		Count:   a.GetCount() + b.GetCount(),
		Missing: a.GetMissing() + b.GetMissing(),
		Nan:     a.GetNan() + b.GetNan(),
		PosInf:  a.GetPosInf() + b.GetPosInf(),
		NegInf:  a.GetNegInf() + b.GetNegInf(),
		Bins:    make([]uint64, len(a.GetBins())),
	}
	for i := range out.Bins {
		out.Bins[i] = a.GetBins()[i] + b.GetBins()[i]
	}
	na, nb := float64(a.GetCount()), float64(b.GetCount())
	switch {
	case a.GetCount() == 0:
		out.Min, out.Max, out.Mean, out.M2 = b.GetMin(), b.GetMax(), b.GetMean(), b.GetM2()
	case b.GetCount() == 0:
		out.Min, out.Max, out.Mean, out.M2 = a.GetMin(), a.GetMax(), a.GetMean(), a.GetM2()
	default:
		n := na + nb
		d := b.GetMean() - a.GetMean()
		out.Min, out.Max = min(a.GetMin(), b.GetMin()), max(a.GetMax(), b.GetMax())
		out.Mean = a.GetMean() + d*nb/n
		out.M2 = a.GetM2() + b.GetM2() + d*d*na*nb/n
	}
	return out, nil
}

// Variance returns the sample variance (M2/(n-1)) of a feature summary, and
// false when it has fewer than two finite values.
func Variance(f *pb.FeatureSummary) (float64, bool) {
	if f.GetCount() < 2 {
		return 0, false
	}
	return f.GetM2() / float64(f.GetCount()-1), true
}
