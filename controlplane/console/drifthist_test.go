package console

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// histFeature is a scored numeric feature on the edges 0 and 1 (three
// bins).
func histFeature(name string, psi float64, current []uint64) api.FeatureDrift {
	return api.FeatureDrift{Name: name, Scored: true, PSI: psi, JS: psi / 2,
		Histogram: &api.HistogramView{Edges: []float64{0, 1}, Baseline: []uint64{10, 80, 10}, Current: current}}
}

// TestDriftHistograms: per release, the page draws the maxHists features
// with the highest PSI over the range, the one asked for by name, then the
// prediction; the current counts are the sum over the range's slices, a
// slice binned on other bins (current absent) is left out and said so, and
// the caption carries the worst scores and the thresholds. Every feature
// gets a link that asks for it.
func TestDriftHistograms(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	th := api.ThresholdsView{JS: 0.1, PSI: 0.25, PSIWarn: 0.1}
	slice := func(i int, feats []api.FeatureDrift) bucket {
		pred := histFeature("digit", 0.05, []uint64{0, 1, 0})
		pred.Histogram = &api.HistogramView{Categories: []string{"0", "1"}, Baseline: []uint64{5, 5, 0}, Current: []uint64{1, 2, 0}}
		return bucket{From: t0.Add(time.Duration(i) * time.Hour), To: t0.Add(time.Duration(i+1) * time.Hour),
			Report: api.DriftReport{Releases: []api.ReleaseDrift{{Model: "m", Release: 1, Thresholds: th, Features: feats, Prediction: &pred}}}}
	}
	var feats []api.FeatureDrift
	for i := range 12 { // f00 has the lowest PSI, f11 the highest
		feats = append(feats, histFeature(fmt.Sprintf("f%02d", i), float64(i)/100, []uint64{1, 2, 3}))
	}
	later := append([]api.FeatureDrift(nil), feats...)
	later[11] = histFeature("f11", 0.5, []uint64{4, 0, 0}) // its worst slice
	later[10] = histFeature("f10", 0.01, nil)              // binned on other bins
	nohist := histFeature("zz", 9, nil)                    // the highest PSI, but no histogram: not drawn
	nohist.Histogram = nil
	later = append(later, nohist)
	buckets := []bucket{slice(0, feats), slice(1, later)}

	rcs := driftCharts(buckets, driftQuery{Model: "m", Range: "6h", Feature: "f00"})
	if len(rcs) != 1 {
		t.Fatalf("%d releases", len(rcs))
	}
	if rcs[0].NoFeature {
		t.Error("f00 was asked for and drawn, yet the page says it has none")
	}
	if rc := driftCharts(buckets, driftQuery{Range: "6h", Feature: "nope"}); !rc[0].NoFeature || len(rc[0].Hists) != maxHists+1 {
		t.Errorf("an unknown feature: NoFeature %v, %d histograms", rc[0].NoFeature, len(rc[0].Hists))
	}
	var names []string
	for _, h := range rcs[0].Hists {
		names = append(names, h.Name)
	}
	if got, want := strings.Join(names, " "), "f11 f10 f09 f08 f07 f06 f05 f04 f00 digit"; got != want {
		t.Fatalf("histograms drawn %q, want %q (top %d by PSI, the one asked for, the prediction)", got, want, maxHists)
	}
	svg := func(i int) string { return string(rcs[0].Hists[i].SVG) }
	// f11: current 1+4, 2+0, 3+0 over the two slices, worst PSI 0.5.
	for _, want := range []string{"feature f11", "current, 6h (10 values)", "baseline (100 values)",
		"PSI 0.5 (alert 0.25, warn 0.1), JS 0.25 (alert 0.1)", "current, 6h ≥ 1: 30% (3)", "current, 6h &lt; 0: 50% (5)", "under", "over"} {
		if !strings.Contains(svg(0), want) {
			t.Errorf("f11's histogram lacks %q", want)
		}
	}
	if !strings.Contains(svg(1), "current, 6h (6 values)") || !strings.Contains(svg(1), "another baseline left out") {
		t.Errorf("f10's slice on other bins is not left out and said so")
	}
	pred := svg(len(names) - 1)
	for _, want := range []string{"prediction digit", "(category)", "current, 6h (6 values)", "other"} {
		if !strings.Contains(pred, want) {
			t.Errorf("the prediction's histogram lacks %q", want)
		}
	}
	if a := rcs[0].Hists[0].Anchor; a != "hist-m-1-f-f11" {
		t.Errorf("anchor %q", a)
	}
	links := rcs[0].FeatureLinks
	if len(links) != 12 || links[0].Name != "f00" {
		t.Fatalf("feature links %v", links)
	}
	u, err := url.Parse(links[3].URL)
	if err != nil || u.Query().Get("feature") != "f03" || u.Query().Get("model") != "m" || u.Query().Get("range") != "6h" || u.Fragment != "hist-m-1-f-f03" {
		t.Errorf("link %q", links[3].URL)
	}
}

// TestCohortHistograms: per release, one histogram with the baseline and
// each cohort's counts as a group, of the feature asked for or else the
// prediction; a cohort on other bins is drawn empty, not mixed in.
func TestCohortHistograms(t *testing.T) {
	rep := func(cur []uint64) api.DriftReport {
		return api.DriftReport{Releases: []api.ReleaseDrift{{Model: "m", Release: 2,
			Features: []api.FeatureDrift{histFeature("x", 0.3, cur), histFeature("y", 0, cur)}}}}
	}
	q := driftQuery{By: "site", Range: "1h"}
	hs := cohortHists(q, "x", []string{"north", "south"}, []api.DriftReport{rep([]uint64{1, 0, 0}), rep(nil)})
	if len(hs) != 1 {
		t.Fatalf("%d histograms", len(hs))
	}
	s := string(hs[0].SVG)
	for _, want := range []string{"m release 2 by site: feature x", "baseline (100 values)", "site=north (1 values)", "site=south (0 values)"} {
		if !strings.Contains(s, want) {
			t.Errorf("cohort histogram lacks %q", want)
		}
	}
	// A cohort without the release still has its (empty) group.
	hs = cohortHists(q, "x", []string{"east", "north"}, []api.DriftReport{{}, rep([]uint64{0, 2, 0})})
	if len(hs) != 1 || !strings.Contains(string(hs[0].SVG), "site=east (0 values)") || !strings.Contains(string(hs[0].SVG), "site=north (2 values)") {
		t.Errorf("a cohort without the release is not drawn empty")
	}
	if hs := cohortHists(q, "", []string{"north"}, []api.DriftReport{rep(nil)}); len(hs) != 0 {
		t.Errorf("no prediction in the reports, yet %d histograms", len(hs))
	}
}
