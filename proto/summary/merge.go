package summary

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Merge returns the summary of the union of a's and b's records: the same
// model, release and bins (ErrMismatch otherwise). Counts, bins, counters
// and the latency sketch add exactly; moments merge by Chan's formula; the
// window becomes [min start, max end) and windows adds. Slot is kept when
// both agree and cleared otherwise. Scores are dropped: call Score on the
// result. Neither input is modified.
func Merge(a, b *pb.WindowSummary) (*pb.WindowSummary, error) {
	if a.GetModel() != b.GetModel() || a.GetRelease() != b.GetRelease() {
		return nil, fmt.Errorf("%w: %s release %d and %s release %d", ErrMismatch,
			a.GetModel(), a.GetRelease(), b.GetModel(), b.GetRelease())
	}
	if da, db := a.GetBundleDigest(), b.GetBundleDigest(); da != "" && db != "" && da != db {
		return nil, fmt.Errorf("%w: bundle digests differ", ErrMismatch)
	}
	if len(a.GetFeatures()) != len(b.GetFeatures()) || (a.GetPrediction() == nil) != (b.GetPrediction() == nil) {
		return nil, fmt.Errorf("%w: %d and %d features", ErrMismatch, len(a.GetFeatures()), len(b.GetFeatures()))
	}
	out := &pb.WindowSummary{
		Model:        a.GetModel(),
		Release:      a.GetRelease(),
		Version:      a.GetVersion(),
		BundleDigest: a.GetBundleDigest(),
		StartMs:      min(a.GetStartMs(), b.GetStartMs()),
		EndMs:        max(a.GetEndMs(), b.GetEndMs()),
		Windows:      a.GetWindows() + b.GetWindows(),
		Requests:     a.GetRequests() + b.GetRequests(),
		Errors:       a.GetErrors() + b.GetErrors(),
	}
	if out.BundleDigest == "" {
		out.BundleDigest = b.GetBundleDigest()
	}
	if a.GetSlot() == b.GetSlot() {
		out.Slot = a.GetSlot()
	}
	var err error
	if out.Latency, err = mergeSketch(a.GetLatency(), b.GetLatency()); err != nil {
		return nil, err
	}
	out.Features = make([]*pb.FeatureSummary, len(a.GetFeatures()))
	for i := range out.Features {
		if out.Features[i], err = mergeFeature(a.GetFeatures()[i], b.GetFeatures()[i]); err != nil {
			return nil, err
		}
	}
	if a.GetPrediction() != nil {
		if out.Prediction, err = mergeFeature(a.GetPrediction(), b.GetPrediction()); err != nil {
			return nil, err
		}
	}
	ca, cb := a.GetCounters(), b.GetCounters()
	if ca != nil || cb != nil {
		out.Counters = &pb.ModelCounters{
			Errors:              ca.GetErrors() + cb.GetErrors(),
			Crashes:             ca.GetCrashes() + cb.GetCrashes(),
			Rollbacks:           ca.GetRollbacks() + cb.GetRollbacks(),
			ShadowCompared:      ca.GetShadowCompared() + cb.GetShadowCompared(),
			ShadowDisagreements: ca.GetShadowDisagreements() + cb.GetShadowDisagreements(),
		}
	}
	return out, nil
}

// MergeAll merges a non-empty list of summaries in order.
func MergeAll(ss []*pb.WindowSummary) (*pb.WindowSummary, error) {
	if len(ss) == 0 {
		return nil, fmt.Errorf("%w: nothing to merge", ErrMismatch)
	}
	acc := ss[0]
	for _, s := range ss[1:] {
		var err error
		if acc, err = Merge(acc, s); err != nil {
			return nil, err
		}
	}
	if len(ss) == 1 {
		acc = proto.Clone(acc).(*pb.WindowSummary)
		acc.Scores = nil
	}
	return acc, nil
}
