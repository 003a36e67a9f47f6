package flotillapb

import (
	"errors"
	"fmt"
	"math"
)

// Limits on window summaries, so one telemetry message cannot make the
// control plane store or merge unbounded data.
const (
	// MaxSummaries is the most window summaries one Telemetry message carries.
	MaxSummaries = 1000
	// MaxSketchBins is the most bins a latency sketch's dense store spans.
	MaxSketchBins = 4096
	// MaxSketchIndex bounds a sketch bin's index (either sign): at 1%
	// relative accuracy it covers far more than 1 ns to a year.
	MaxSketchIndex = 1 << 16
	// MaxSummaryFeatures is the most monitored features one summary has.
	MaxSummaryFeatures = maxFeatures
)

// Validate checks a batch of window summaries. Telemetry.Validate checks the
// envelope; a receiver calls this on the Summaries payload too.
func (m *Summaries) Validate() error {
	if n := len(m.GetSummaries()); n > MaxSummaries {
		return fmt.Errorf("summaries: %d, at most %d", n, MaxSummaries)
	}
	for i, s := range m.GetSummaries() {
		if err := s.Validate(); err != nil {
			return fmt.Errorf("summaries[%d]: %w", i, err)
		}
	}
	return nil
}

// Validate checks one window summary's required fields, ranges and sizes.
// It does not check that the bins match a baseline; the merger does.
func (s *WindowSummary) Validate() error {
	if s.GetModel() == "" || len(s.GetModel()) > 256 {
		return errors.New("model is required and at most 256 bytes")
	}
	if len(s.GetVersion()) > 128 || len(s.GetSlot()) > 8 {
		return errors.New("version or slot too long")
	}
	if d := s.GetBundleDigest(); d != "" {
		if err := CheckDigest(d); err != nil {
			return fmt.Errorf("bundle_digest: %w", err)
		}
	}
	if s.GetStartMs() <= 0 || s.GetEndMs() <= s.GetStartMs() {
		return fmt.Errorf("window [%d, %d) is empty or unset", s.GetStartMs(), s.GetEndMs())
	}
	if s.GetWindows() == 0 {
		return errors.New("windows must be at least 1")
	}
	if s.GetErrors() > s.GetRequests() {
		return fmt.Errorf("errors %d exceed requests %d", s.GetErrors(), s.GetRequests())
	}
	if err := s.GetLatency().validate(); err != nil {
		return fmt.Errorf("latency: %w", err)
	}
	if n := len(s.GetFeatures()); n > MaxSummaryFeatures {
		return fmt.Errorf("features: %d, at most %d", n, MaxSummaryFeatures)
	}
	for i, f := range s.GetFeatures() {
		if err := f.validate(); err != nil {
			return fmt.Errorf("features[%d]: %w", i, err)
		}
	}
	if p := s.GetPrediction(); p != nil {
		if err := p.validate(); err != nil {
			return fmt.Errorf("prediction: %w", err)
		}
	}
	if c := s.GetCounters(); c.GetShadowDisagreements() > c.GetShadowCompared() {
		return errors.New("counters: shadow_disagreements exceed shadow_compared")
	}
	return s.GetScores().validate()
}

func (l *LatencySketch) validate() error {
	if l == nil {
		return nil
	}
	if a := l.GetRelativeAccuracy(); len(l.GetCounts()) > 0 && !(a > 0 && a < 1) {
		return fmt.Errorf("relative_accuracy %v is not in (0, 1)", a)
	}
	if n := len(l.GetCounts()); n > MaxSketchBins {
		return fmt.Errorf("%d bins, at most %d", n, MaxSketchBins)
	}
	lo, hi := int64(l.GetOffset()), int64(l.GetOffset())+int64(len(l.GetCounts()))
	if lo < -MaxSketchIndex || hi > MaxSketchIndex {
		return fmt.Errorf("bin indexes [%d, %d) outside ±%d", lo, hi, MaxSketchIndex)
	}
	if math.IsNaN(l.GetSum()) || math.IsInf(l.GetSum(), 0) {
		return errors.New("sum is not finite")
	}
	return nil
}

func (f *FeatureSummary) validate() error {
	if f.GetName() == "" || len(f.GetName()) > 256 {
		return errors.New("name is required and at most 256 bytes")
	}
	if n := len(f.GetBins()); n > maxBins+2 {
		return fmt.Errorf("%q: %d bins, at most %d", f.GetName(), n, maxBins+2)
	}
	for _, v := range []float64{f.GetMin(), f.GetMax(), f.GetMean(), f.GetM2()} {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("%q: min, max, mean and m2 must be finite", f.GetName())
		}
	}
	if f.GetM2() < 0 {
		return fmt.Errorf("%q: m2 is negative", f.GetName())
	}
	if f.GetCount() > 0 && f.GetMin() > f.GetMax() {
		return fmt.Errorf("%q: min %v > max %v", f.GetName(), f.GetMin(), f.GetMax())
	}
	var inBins uint64
	for _, b := range f.GetBins() {
		if inBins+b < inBins {
			return fmt.Errorf("%q: bin counts overflow", f.GetName())
		}
		inBins += b
	}
	return nil
}

func (d *DriftScores) validate() error {
	if d == nil {
		return nil
	}
	if n := len(d.GetFeatures()); n > MaxSummaryFeatures {
		return fmt.Errorf("scores.features: %d, at most %d", n, MaxSummaryFeatures)
	}
	scores := append([]*FeatureScore{d.GetPrediction()}, d.GetFeatures()...)
	for _, s := range scores {
		if len(s.GetName()) > 256 {
			return errors.New("scores: name over 256 bytes")
		}
		for _, v := range []float64{s.GetJs(), s.GetPsi(), s.GetKs()} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				return fmt.Errorf("scores: %q has a score that is not a finite number >= 0", s.GetName())
			}
		}
	}
	return nil
}
