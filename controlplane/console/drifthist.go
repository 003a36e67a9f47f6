package console

import (
	"fmt"
	"html/template"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/console/chart"
)

// maxHists caps the feature histograms drawn per release: those with the
// highest drift first; any other is drawn when asked for by name.
const maxHists = 8

// histChart is one drawn histogram, current against baseline.
type histChart struct {
	Name   string
	Anchor string // the element id, for links
	SVG    template.HTML
}

// histAcc gathers one value's histogram over a range's slices: the
// baseline's bins, the current counts summed over the slices binned on
// them, and the worst scores.
type histAcc struct {
	name      string
	predict   bool
	hist      *api.HistogramView // the latest slice's, for its bins and baseline
	current   []uint64
	psi, js   float64
	scored    bool
	otherBins bool // some slice was binned on other bins and is left out
}

func (h *histAcc) add(f api.FeatureDrift) {
	if f.Scored {
		h.scored = true
		h.psi, h.js = max(h.psi, f.PSI), max(h.js, f.JS)
	}
	hv := f.Histogram
	if hv == nil {
		return
	}
	if h.hist == nil || !sameBins(h.hist, hv) {
		// The baseline changed (or this is the first): keep the latest.
		h.hist, h.current = hv, make([]uint64, len(hv.Baseline))
	}
	if len(hv.Current) != len(hv.Baseline) {
		h.otherBins = true
		return
	}
	for i, n := range hv.Current {
		h.current[i] += n
	}
}

func sameBins(a, b *api.HistogramView) bool {
	if len(a.Edges) != len(b.Edges) || len(a.Categories) != len(b.Categories) || len(a.Baseline) != len(b.Baseline) {
		return false
	}
	for i := range a.Edges {
		if a.Edges[i] != b.Edges[i] {
			return false
		}
	}
	for i := range a.Categories {
		if a.Categories[i] != b.Categories[i] {
			return false
		}
	}
	return true
}

// histograms accumulates a release's values over slices.
type histograms struct {
	byName map[string]*histAcc
	order  []string
}

func (hs *histograms) add(rd api.ReleaseDrift) {
	if hs.byName == nil {
		hs.byName = map[string]*histAcc{}
	}
	put := func(key string, f api.FeatureDrift, predict bool) {
		a := hs.byName[key]
		if a == nil {
			a = &histAcc{name: f.Name, predict: predict}
			hs.byName[key] = a
			hs.order = append(hs.order, key)
		}
		a.add(f)
	}
	for _, f := range rd.Features {
		put("f:"+f.Name, f, false)
	}
	if rd.Prediction != nil {
		put("p:"+rd.Prediction.Name, *rd.Prediction, true)
	}
}

// features returns the features with a histogram, highest drift first
// (PSI, then JS, then name).
func (hs *histograms) features() []*histAcc {
	var out []*histAcc
	for _, k := range hs.order {
		if a := hs.byName[k]; !a.predict && a.hist != nil {
			out = append(out, a)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.psi != b.psi {
			return a.psi > b.psi
		}
		if a.js != b.js {
			return a.js > b.js
		}
		return a.name < b.name
	})
	return out
}

// pick returns what the page draws: the maxHists features with the
// highest drift, the one asked for by name if not among them, then the
// prediction; values without a baseline histogram are left out.
func (hs *histograms) pick(want string) []*histAcc {
	feats := hs.features()
	out := feats[:min(len(feats), maxHists)]
	for _, a := range feats[len(out):] {
		if a.name == want {
			out = append(out, a)
		}
	}
	for _, k := range hs.order {
		if a := hs.byName[k]; a.predict && a.hist != nil {
			out = append(out, a)
		}
	}
	return out
}

// chart draws the value's histogram, its scores and the thresholds in the
// subtitle.
func (h *histAcc) chart(title, span string, th api.ThresholdsView, extra []chart.HistGroup) chart.Histogram {
	what := "feature " + h.name
	if h.predict {
		what = "prediction " + h.name
	}
	hc := chart.Histogram{Title: title + ": " + what + ", current against baseline"}
	score := "not scored (too few values or no baseline)"
	if h.scored {
		score = fmt.Sprintf("worst slice in %s: PSI %s (alert %s, warn %s), JS %s (alert %s)",
			span, f3(h.psi), f3(th.PSI), f3(th.PSIWarn), f3(h.js), f3(th.JS))
	}
	if h.otherBins {
		score += "; slices binned on another baseline left out"
	}
	hc.Subtitle = score
	if h.hist == nil {
		hc.XLabel = h.name + ": no baseline histogram"
		return hc
	}
	hc.Edges, hc.Categories = h.hist.Edges, h.hist.Categories
	if len(hc.Edges) > 0 {
		hc.XLabel = h.name + " (the model's units; bin edges from the baseline)"
	} else {
		hc.XLabel = h.name + " (category)"
	}
	hc.Groups = []chart.HistGroup{{Name: "baseline", Counts: h.hist.Baseline}}
	if extra != nil {
		hc.Groups = append(hc.Groups, extra...)
	} else {
		hc.Groups = append(hc.Groups, chart.HistGroup{Name: "current, " + span, Counts: h.current})
	}
	return hc
}

func f3(v float64) string { return strconv.FormatFloat(v, 'g', 3, 64) }

// histAnchor is the id of a release's value's histogram.
func histAnchor(model string, release uint64, name string, predict bool) string {
	kind := "f"
	if predict {
		kind = "p"
	}
	id := "hist-" + model + "-" + strconv.FormatUint(release, 10) + "-" + kind + "-" + name
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, id)
}

// featureLink is a link to the drift page as q, showing one feature.
type featureLink struct {
	Name, URL string
}

func featureLinks(q driftQuery, model string, release uint64, hs *histograms) []featureLink {
	feats := hs.features()
	sort.Slice(feats, func(i, j int) bool { return feats[i].name < feats[j].name })
	out := make([]featureLink, 0, len(feats))
	for _, a := range feats {
		v := url.Values{}
		set := func(k, s string) {
			if s != "" {
				v.Set(k, s)
			}
		}
		set("model", model)
		set("release", strconv.FormatUint(release, 10))
		set("selector", q.Selector)
		set("range", q.Range)
		set("by", q.By)
		set("feature", a.name)
		out = append(out, featureLink{Name: a.name, URL: "/drift?" + v.Encode() + "#" + histAnchor(model, release, a.name, false)})
	}
	return out
}

// maxCohortHists caps the cohorts drawn in one histogram: the baseline
// and each cohort take a colour of the palette's eight.
const maxCohortHists = 7

// cohortHists draws, per release, the baseline of one value (the feature
// named want, or the prediction when want is empty) against each cohort's
// current counts over the range: one group per cohort, empty for a cohort
// without values on the release's bins. reports are the cohorts' drift
// reports, in the order of values.
func cohortHists(q driftQuery, want string, values []string, reports []api.DriftReport) []histChart {
	type key struct {
		model   string
		release uint64
	}
	type acc struct {
		base *histAcc
		th   api.ThresholdsView
		cur  map[int][]uint64 // by cohort
	}
	pick := func(rd api.ReleaseDrift) *api.FeatureDrift {
		if want == "" {
			return rd.Prediction
		}
		for i := range rd.Features {
			if rd.Features[i].Name == want {
				return &rd.Features[i]
			}
		}
		return nil
	}
	n := min(len(values), len(reports), maxCohortHists)
	accs := map[key]*acc{}
	var order []key
	for ci := range n {
		for _, rd := range reports[ci].Releases {
			f := pick(rd)
			if f == nil || f.Histogram == nil {
				continue
			}
			k := key{rd.Model, rd.Release}
			a := accs[k]
			if a == nil {
				a = &acc{base: &histAcc{name: f.Name, predict: want == ""}, th: rd.Thresholds, cur: map[int][]uint64{}}
				a.base.add(*f)
				accs[k] = a
				order = append(order, k)
			}
			if sameBins(a.base.hist, f.Histogram) && len(f.Histogram.Current) == len(f.Histogram.Baseline) {
				a.cur[ci] = f.Histogram.Current
			}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		return order[i].model < order[j].model || order[i].model == order[j].model && order[i].release < order[j].release
	})
	out := make([]histChart, 0, len(order))
	for _, k := range order {
		a := accs[k]
		groups := make([]chart.HistGroup, n)
		for ci := range n {
			groups[ci] = chart.HistGroup{Name: q.By + "=" + values[ci], Counts: a.cur[ci]}
		}
		title := fmt.Sprintf("%s release %d by %s", k.model, k.release, q.By)
		hc := a.base.chart(title, q.Range, a.th, groups)
		hc.Subtitle = "each cohort's values over " + q.Range + " against the release's baseline"
		if len(values) > n {
			hc.Subtitle += fmt.Sprintf(" (first %d of %d cohorts)", n, len(values))
		}
		out = append(out, histChart{Name: a.base.name, Anchor: "cohort-" + histAnchor(k.model, k.release, a.base.name, a.base.predict), SVG: template.HTML(hc.SVG())})
	}
	return out
}
