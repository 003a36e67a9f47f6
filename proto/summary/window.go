package summary

import (
	"math"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Meta names what a window summarises.
type Meta struct {
	Model        string
	Release      uint64
	Version      string
	Slot         string
	BundleDigest string
}

// Record is one inference as the summary sees it.
type Record struct {
	LatencyMs float64
	OK        bool
	// Features are the monitored values, in the baseline's order; a value
	// beyond the slice's end, or whose Missing entry is true, is missing.
	Features []float64
	Missing  []bool
	// Prediction is the monitored output, when HasPrediction.
	Prediction    float64
	HasPrediction bool
	// Unsampled says the features were not computed for this record (a
	// monitor function sampling 1 in N): they count neither as seen nor
	// as missing.
	Unsampled bool
}

// Window accumulates the records of one window into a summary. It is not
// safe for concurrent use.
type Window struct {
	meta     Meta
	start    int64
	requests uint64
	errors   uint64
	latency  *Sketch
	features []*featureAcc
	pred     *featureAcc
	counters pb.ModelCounters
}

// NewWindow starts a window at startMs for the model in meta, binning on
// baseline's edges (nil: counts and latency only).
func NewWindow(meta Meta, baseline *pb.DriftBaseline, startMs int64) *Window {
	w := &Window{meta: meta, start: startMs, latency: NewSketch()}
	for _, f := range baseline.GetFeatures() {
		w.features = append(w.features, newFeatureAcc(f))
	}
	if p := baseline.GetPrediction(); p != nil {
		w.pred = newFeatureAcc(p)
	}
	return w
}

// Add records one inference.
func (w *Window) Add(r Record) {
	w.requests++
	if !r.OK {
		w.errors++
	}
	w.latency.Add(r.LatencyMs)
	if !r.OK {
		// A failed inference has no trustworthy features or prediction.
		return
	}
	for i, a := range w.features {
		if r.Unsampled {
			break
		}
		present := i < len(r.Features) && (i >= len(r.Missing) || !r.Missing[i])
		v := math.NaN()
		if present {
			v = r.Features[i]
		}
		a.add(v, present)
	}
	if w.pred != nil {
		a := w.pred
		a.add(r.Prediction, r.HasPrediction)
	}
}

// AddCounters adds the lifecycle's per-model counters to the window.
func (w *Window) AddCounters(c *pb.ModelCounters) {
	w.counters.Errors += c.GetErrors()
	w.counters.Crashes += c.GetCrashes()
	w.counters.Rollbacks += c.GetRollbacks()
	w.counters.ShadowCompared += c.GetShadowCompared()
	w.counters.ShadowDisagreements += c.GetShadowDisagreements()
}

// Requests is the number of records added so far.
func (w *Window) Requests() uint64 { return w.requests }

// Start is the window's start in milliseconds.
func (w *Window) Start() int64 { return w.start }

// Summary returns the window's summary, ending at endMs (exclusive),
// without scores.
func (w *Window) Summary(endMs int64) *pb.WindowSummary {
	s := &pb.WindowSummary{
		Model:        w.meta.Model,
		Release:      w.meta.Release,
		Version:      w.meta.Version,
		Slot:         w.meta.Slot,
		BundleDigest: w.meta.BundleDigest,
		StartMs:      w.start,
		EndMs:        endMs,
		Windows:      1,
		Requests:     w.requests,
		Errors:       w.errors,
		Latency:      w.latency.Proto(),
		Counters:     &pb.ModelCounters{},
	}
	*s.Counters = pb.ModelCounters{Errors: w.counters.Errors, Crashes: w.counters.Crashes, Rollbacks: w.counters.Rollbacks,
		ShadowCompared: w.counters.ShadowCompared, ShadowDisagreements: w.counters.ShadowDisagreements}
	for _, a := range w.features {
		s.Features = append(s.Features, cloneFeature(&a.s))
	}
	if w.pred != nil {
		s.Prediction = cloneFeature(&w.pred.s)
	}
	return s
}

func cloneFeature(f *pb.FeatureSummary) *pb.FeatureSummary {
	return &pb.FeatureSummary{Name: f.Name, Count: f.Count, Missing: f.Missing, Nan: f.Nan, PosInf: f.PosInf,
		NegInf: f.NegInf, Min: f.Min, Max: f.Max, Mean: f.Mean, M2: f.M2, Bins: append([]uint64(nil), f.Bins...)}
}
