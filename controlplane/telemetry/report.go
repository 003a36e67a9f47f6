package telemetry

import (
	"context"
	"math"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// Baseline is what a model release's merged summaries are scored against:
// the bundle manifest's drift baseline, the thresholds in force and the
// fewest requests worth judging.
type Baseline struct {
	Drift      *pb.DriftBaseline
	Thresholds summary.Thresholds
	MinRecords uint64
	Version    string
}

// BaselineFromManifest is the baseline a bundle manifest carries.
func BaselineFromManifest(m *pb.BundleManifest) Baseline {
	return Baseline{
		Drift:      m.GetDrift(),
		Thresholds: summary.EffectiveThresholds(m.GetDrift().GetThresholds(), nil),
		MinRecords: summary.MinRecordsOf(m),
		Version:    m.GetVersion(),
	}
}

// Baselines finds a model release's baseline; ok is false when the
// control plane does not hold its manifest.
type Baselines interface {
	Baseline(ctx context.Context, model string, release uint64) (b Baseline, ok bool, err error)
}

// Drift states of a feature or a release, from best to worst.
const (
	StateOK         = "ok"
	StateWarn       = "warn"
	StateAlert      = "alert"
	StateUnjudged   = "unjudged"    // fewer requests than the minimum, or nothing binned
	StateNoBaseline = "no-baseline" // the manifest is not on this control plane, or has no baseline
)

// ReleaseReport is one model release's merged telemetry over a query's
// range and its drift against the baseline.
type ReleaseReport struct {
	Model      string
	Release    uint64
	Version    string
	Devices    int
	Windows    uint32
	Requests   uint64
	Errors     uint64
	ErrorRate  float64 // errors / requests; 0 without requests
	Latency    bool    // whether the sketch held any value (the quantiles below are then set)
	P50, P95   float64 // milliseconds, within the sketch's 1 % relative accuracy
	P99        float64
	Counters   *pb.ModelCounters
	Features   []FeatureReport // in the baseline's order
	Prediction *FeatureReport  // nil without a prediction baseline
	Thresholds summary.Thresholds
	MinRecords uint64
	Baseline   bool // a baseline was found
	Judged     bool
	Alert      bool
	Warn       bool
	MaxJS      float64
	MaxPSI     float64
	MaxKS      float64
	State      string
}

// FeatureReport is one monitored value's merged statistics and scores.
type FeatureReport struct {
	Name                string
	Count, Missing, NaN uint64
	PosInf, NegInf      uint64
	Min, Max, Mean, Std float64
	JS, PSI, KS         float64
	Scored              bool // scores were computed (a baseline with the same bins)
	State               string
	// The histograms, with a baseline for the value: its bins (Edges for a
	// numeric value, Categories for a categorical one; see
	// pb.FeatureBaseline), the baseline's counts and the merged summary's
	// (nil when the devices binned on other bins; zeros when nothing came).
	Edges        []float64
	Categories   []string
	BaselineBins []uint64
	Bins         []uint64
}

// Report is the drift report of filter f: the query's merge per release,
// each scored against its baseline.
type Report struct {
	Releases []ReleaseReport
	Raw      int // raw summaries merged
	Rollups  int // rollup rows merged
}

// DriftReport runs Query for f and scores each release against the
// baseline bl finds for it.
func DriftReport(ctx context.Context, st Store, bl Baselines, f store.SummaryFilter) (*Report, error) {
	res, err := Query(ctx, st, f)
	if err != nil {
		return nil, err
	}
	out := &Report{Raw: res.Raw, Rollups: res.Rollups}
	for _, s := range res.Releases {
		var b Baseline
		ok := false
		if bl != nil {
			if b, ok, err = bl.Baseline(ctx, s.GetModel(), s.GetRelease()); err != nil {
				return nil, err
			}
		}
		r := releaseReport(s, b, ok)
		r.Devices = res.ReleaseDevices[s.GetRelease()]
		out.Releases = append(out.Releases, r)
	}
	return out, nil
}

func releaseReport(s *pb.WindowSummary, b Baseline, haveBaseline bool) ReleaseReport {
	if !haveBaseline {
		b = Baseline{Thresholds: summary.EffectiveThresholds(nil, nil), MinRecords: summary.DefaultMinRecords}
	}
	r := ReleaseReport{
		Model: s.GetModel(), Release: s.GetRelease(), Version: s.GetVersion(), Windows: s.GetWindows(),
		Requests: s.GetRequests(), Errors: s.GetErrors(), Counters: s.GetCounters(),
		Thresholds: b.Thresholds, MinRecords: b.MinRecords, Baseline: haveBaseline && b.Drift != nil,
	}
	if r.Version == "" {
		r.Version = b.Version
	}
	if r.Requests > 0 {
		r.ErrorRate = float64(r.Errors) / float64(r.Requests)
	}
	if p50, ok := summary.Quantile(s.GetLatency(), 0.5); ok {
		r.Latency, r.P50 = true, p50
		r.P95, _ = summary.Quantile(s.GetLatency(), 0.95)
		r.P99, _ = summary.Quantile(s.GetLatency(), 0.99)
	}
	byName := map[string]*pb.FeatureSummary{}
	for _, f := range s.GetFeatures() {
		byName[f.GetName()] = f
	}
	var sc *pb.DriftScores
	if r.Baseline {
		sc = summary.Score(b.Drift, s, b.Thresholds, b.MinRecords)
		r.Judged, r.Alert, r.Warn = sc.GetJudged(), sc.GetAlert(), sc.GetWarn()
		r.MaxJS, r.MaxPSI, r.MaxKS = sc.GetMaxJs(), sc.GetMaxPsi(), sc.GetMaxKs()
	}
	scores := map[string]*pb.FeatureScore{}
	for _, f := range sc.GetFeatures() {
		scores[f.GetName()] = f
	}
	if r.Baseline {
		for _, fb := range b.Drift.GetFeatures() {
			r.Features = append(r.Features, r.feature(fb, byName[fb.GetName()], scores[fb.GetName()]))
		}
		if p := b.Drift.GetPrediction(); p != nil {
			f := r.feature(p, s.GetPrediction(), sc.GetPrediction())
			r.Prediction = &f
		}
	} else {
		for _, f := range s.GetFeatures() {
			r.Features = append(r.Features, r.feature(&pb.FeatureBaseline{Name: f.GetName()}, f, nil))
		}
		if p := s.GetPrediction(); p != nil {
			f := r.feature(&pb.FeatureBaseline{Name: p.GetName()}, p, nil)
			r.Prediction = &f
		}
	}
	switch {
	case !r.Baseline:
		r.State = StateNoBaseline
	case !r.Judged:
		r.State = StateUnjudged
	case r.Alert:
		r.State = StateAlert
	case r.Warn:
		r.State = StateWarn
	default:
		r.State = StateOK
	}
	return r
}

// feature reports one value of baseline fb (only its name without a
// baseline): its statistics from the merged summary (nil: none arrived),
// its scores (nil: not scored) and both histograms.
func (r *ReleaseReport) feature(fb *pb.FeatureBaseline, fs *pb.FeatureSummary, sc *pb.FeatureScore) FeatureReport {
	f := FeatureReport{Name: fb.GetName(), Count: fs.GetCount(), Missing: fs.GetMissing(), NaN: fs.GetNan(),
		PosInf: fs.GetPosInf(), NegInf: fs.GetNegInf(), Min: fs.GetMin(), Max: fs.GetMax(), Mean: fs.GetMean()}
	if base := fb.GetCounts(); r.Baseline && len(base) > 0 {
		f.Edges, f.Categories, f.BaselineBins = fb.GetBinEdges(), fb.GetCategories(), base
		switch bins := fs.GetBins(); {
		case len(bins) == len(base):
			f.Bins = bins
		case len(bins) == 0:
			f.Bins = make([]uint64, len(base))
		}
	}
	if v, ok := summary.Variance(fs); ok {
		f.Std = math.Sqrt(v)
	}
	t := r.Thresholds
	switch {
	case !r.Baseline:
		f.State = StateNoBaseline
	case sc == nil:
		f.State = StateUnjudged
	default:
		f.Scored, f.JS, f.PSI, f.KS = true, sc.GetJs(), sc.GetPsi(), sc.GetKs()
		switch {
		case !r.Judged || f.Count == 0:
			f.State = StateUnjudged
		case f.JS > t.JS || f.PSI > t.PSI:
			f.State = StateAlert
		case f.PSI > t.PSIWarn || f.KS > t.KS:
			f.State = StateWarn
		default:
			f.State = StateOK
		}
	}
	return f
}
