package summary

import (
	"math"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Variability returns the thresholds the reference data's own
// window-to-window variability implies, as NannyML sets them: for each
// score, the mean plus three sample standard deviations of the worst
// per-window score (MaxJs, MaxPsi, MaxKs) over reference windows scored
// against the whole reference. It returns nil for fewer than two windows.
func Variability(windows []*pb.DriftScores) *pb.DriftThresholds {
	if len(windows) < 2 {
		return nil
	}
	f := func(get func(*pb.DriftScores) float64) float64 {
		var mean, m2 float64
		for i, w := range windows {
			d := get(w) - mean
			mean += d / float64(i+1)
			m2 += d * (get(w) - mean)
		}
		return mean + 3*math.Sqrt(m2/float64(len(windows)-1))
	}
	return &pb.DriftThresholds{
		Js:  f((*pb.DriftScores).GetMaxJs),
		Psi: f((*pb.DriftScores).GetMaxPsi),
		Ks:  f((*pb.DriftScores).GetMaxKs),
	}
}
