package flotillapb

import (
	"math"
	"strings"
	"testing"
)

func validSummary() *WindowSummary {
	return &WindowSummary{Model: "digits", Release: 1, Slot: "a", StartMs: 1000, EndMs: 61000, Windows: 1,
		Requests: 3, Errors: 1,
		Latency:  &LatencySketch{RelativeAccuracy: 0.01, Offset: 10, Counts: []uint64{1, 2}},
		Features: []*FeatureSummary{{Name: "x", Count: 2, Min: 0, Max: 1, Mean: 0.5, M2: 0.5, Bins: []uint64{0, 1, 1, 0}}},
		Counters: &ModelCounters{ShadowCompared: 2, ShadowDisagreements: 1},
		Scores:   &DriftScores{MaxJs: 0.1, Features: []*FeatureScore{{Name: "x", Js: 0.1}}}}
}

func TestSummariesValidate(t *testing.T) {
	if err := (&Summaries{Summaries: []*WindowSummary{validSummary()}}).Validate(); err != nil {
		t.Fatalf("valid: %v", err)
	}
	for name, mod := range map[string]func(s *WindowSummary){
		"no model":       func(s *WindowSummary) { s.Model = "" },
		"long model":     func(s *WindowSummary) { s.Model = strings.Repeat("m", 257) },
		"bad digest":     func(s *WindowSummary) { s.BundleDigest = "../etc" },
		"empty window":   func(s *WindowSummary) { s.EndMs = s.StartMs },
		"no windows":     func(s *WindowSummary) { s.Windows = 0 },
		"errors>reqs":    func(s *WindowSummary) { s.Errors = 4 },
		"accuracy":       func(s *WindowSummary) { s.Latency.RelativeAccuracy = 1 },
		"sketch bins":    func(s *WindowSummary) { s.Latency.Counts = make([]uint64, MaxSketchBins+1) },
		"sketch index":   func(s *WindowSummary) { s.Latency.Offset = MaxSketchIndex },
		"sketch sum":     func(s *WindowSummary) { s.Latency.Sum = math.Inf(1) },
		"feature name":   func(s *WindowSummary) { s.Features[0].Name = "" },
		"nan mean":       func(s *WindowSummary) { s.Features[0].Mean = math.NaN() },
		"negative m2":    func(s *WindowSummary) { s.Features[0].M2 = -1 },
		"min>max":        func(s *WindowSummary) { s.Features[0].Min = 2 },
		"too many bins":  func(s *WindowSummary) { s.Features[0].Bins = make([]uint64, maxBins+3) },
		"bins overflow":  func(s *WindowSummary) { s.Features[0].Bins = []uint64{math.MaxUint64, 1} },
		"prediction":     func(s *WindowSummary) { s.Prediction = &FeatureSummary{} },
		"shadow":         func(s *WindowSummary) { s.Counters.ShadowDisagreements = 3 },
		"negative score": func(s *WindowSummary) { s.Scores.Features[0].Psi = -1 },
		"nan score":      func(s *WindowSummary) { s.Scores.Prediction = &FeatureScore{Ks: math.NaN()} },
		"many features": func(s *WindowSummary) {
			for range MaxSummaryFeatures {
				s.Features = append(s.Features, s.Features[0])
			}
		},
	} {
		s := validSummary()
		mod(s)
		if err := (&Summaries{Summaries: []*WindowSummary{s}}).Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	many := &Summaries{}
	for range MaxSummaries + 1 {
		many.Summaries = append(many.Summaries, validSummary())
	}
	if many.Validate() == nil {
		t.Error("too many summaries accepted")
	}
}
