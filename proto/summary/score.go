package summary

import (
	"math"
	"strconv"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Default thresholds, used for a score when neither the manifest nor the
// reference data's variability gives one. PSI's are the industry's usual
// 0.1 (warn) and 0.25 (alert).
const (
	DefaultJS      = 0.1
	DefaultPSI     = 0.25
	DefaultPSIWarn = 0.1
	DefaultKS      = 0.1
)

// MinRecordsAnnotation is the manifest annotation giving the fewest records
// a window needs to be scored; smaller windows are carried forward into the
// next. DriftBaseline.min_window_records replaced it; bundles built before
// read it still, and `flotctl bundle build -baseline` sets both (for agents
// older than the field).
const MinRecordsAnnotation = "flotilla.drift.min_window_records"

// DefaultMinRecords is the minimum when the manifest gives none.
const DefaultMinRecords = 100

// MinRecordsOf is the minimum window size of a bundle manifest: its drift
// baseline's min_window_records, or else (a bundle built before the field)
// the MinRecordsAnnotation, or else DefaultMinRecords.
func MinRecordsOf(m *pb.BundleManifest) uint64 {
	if v := m.GetDrift().GetMinWindowRecords(); v > 0 {
		return uint64(v)
	}
	return MinRecords(m.GetAnnotations())
}

// MinRecords reads the minimum window size from a manifest's annotations.
func MinRecords(annotations map[string]string) uint64 {
	if v, err := strconv.ParseUint(annotations[MinRecordsAnnotation], 10, 32); err == nil && v > 0 {
		return v
	}
	return DefaultMinRecords
}

// Thresholds are the drift thresholds in force: a score above one is an
// alert (PSIWarn: a warning).
type Thresholds struct {
	JS, PSI, PSIWarn, KS float64
}

// EffectiveThresholds combines the manifest's thresholds with those the
// reference data's own window-to-window variability implies (mean + 3σ,
// see Variability; nil when unknown): for each score, the tighter (smaller)
// of the two that are set, and the default when neither is.
func EffectiveThresholds(manifest, variability *pb.DriftThresholds) Thresholds {
	pick := func(m, v, def float64) float64 {
		switch {
		case m > 0 && v > 0:
			return min(m, v)
		case m > 0:
			return m
		case v > 0:
			return v
		}
		return def
	}
	t := Thresholds{
		JS:  pick(manifest.GetJs(), variability.GetJs(), DefaultJS),
		PSI: pick(manifest.GetPsi(), variability.GetPsi(), DefaultPSI),
		KS:  pick(manifest.GetKs(), variability.GetKs(), DefaultKS),
	}
	t.PSIWarn = min(DefaultPSIWarn, t.PSI)
	return t
}

// Score scores a summary against the baseline: per feature and for the
// prediction, the JS distance (base 2), PSI and binned KS of the summary's
// bins against the baseline's counts. A value with no observations scores
// 0. The summary is judged only when it holds at least minRecords requests;
// it then alerts when the largest JS or PSI crosses its threshold, and
// warns on that, on PSI over PSIWarn, or on KS over its threshold.
// Features the summary and baseline do not share by name and bin count are
// skipped.
func Score(b *pb.DriftBaseline, s *pb.WindowSummary, t Thresholds, minRecords uint64) *pb.DriftScores {
	out := &pb.DriftScores{}
	byName := make(map[string]*pb.FeatureSummary, len(s.GetFeatures()))
	for _, f := range s.GetFeatures() {
		byName[f.GetName()] = f
	}
	add := func(fb *pb.FeatureBaseline, fs *pb.FeatureSummary) *pb.FeatureScore {
		sc := scoreFeature(fb, fs)
		out.MaxJs = max(out.MaxJs, sc.Js)
		out.MaxPsi = max(out.MaxPsi, sc.Psi)
		out.MaxKs = max(out.MaxKs, sc.Ks)
		return sc
	}
	for _, fb := range b.GetFeatures() {
		if fs, ok := byName[fb.GetName()]; ok && len(fs.GetBins()) == len(fb.GetCounts()) {
			out.Features = append(out.Features, add(fb, fs))
		}
	}
	if p := b.GetPrediction(); p != nil && len(s.GetPrediction().GetBins()) == len(p.GetCounts()) {
		out.Prediction = add(p, s.GetPrediction())
	}
	out.Judged = s.GetRequests() >= minRecords && minRecords > 0 || s.GetRequests() > 0 && minRecords == 0
	if out.Judged {
		// JS is the primary score and PSI has alert semantics of its own;
		// KS, coarser over binned CDFs and noisier in small windows, warns.
		out.Alert = out.MaxJs > t.JS || out.MaxPsi > t.PSI
		out.Warn = out.Alert || out.MaxPsi > t.PSIWarn || out.MaxKs > t.KS
	}
	return out
}

func scoreFeature(fb *pb.FeatureBaseline, fs *pb.FeatureSummary) *pb.FeatureScore {
	sc := &pb.FeatureScore{Name: fb.GetName()}
	ref, cur := floats(fb.GetCounts()), floats(fs.GetBins())
	if v, ok := JSDistance(ref, cur, 2); ok {
		sc.Js = v
	}
	if v, ok := PSI(ref, cur); ok && !math.IsInf(v, 0) {
		sc.Psi = v
	}
	if v, ok := KS(ref, cur); ok {
		sc.Ks = v
	}
	return sc
}
