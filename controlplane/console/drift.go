package console

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/console/chart"
)

// driftRanges are the ranges the drift page offers, each cut into
// driftBuckets points per line.
var driftRanges = map[string]time.Duration{"1h": time.Hour, "6h": 6 * time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour}

const driftBuckets = 12

// driftQuery is what the drift page shows: one model (all when empty),
// release (0: all), cohort (a label selector), over a range.
type driftQuery struct {
	Model    string
	Release  uint64
	Selector string
	Range    string
	// By is a label key: the page then compares the cohorts of its values.
	By string
	// Feature is a feature whose histogram the page draws besides those
	// with the highest drift (and compares by cohort instead of the
	// prediction).
	Feature string
}

// bucket is one time slice's drift report.
type bucket struct {
	From, To time.Time
	Report   api.DriftReport
}

// fetchDrift is the drift page's one access to the data: the API's drift
// report for each of driftBuckets slices of the range, oldest first. What
// the API adds to its report (histograms, say) reaches the page through
// here without another query.
func fetchDrift(ctx context.Context, cl *apiclient.Client, q driftQuery, now time.Time) ([]bucket, error) {
	span := driftRanges[q.Range]
	step := span / driftBuckets
	end := now.Truncate(step).Add(step) // the current slice, still filling
	out := make([]bucket, 0, driftBuckets)
	for i := driftBuckets; i > 0; i-- {
		from, to := end.Add(-time.Duration(i)*step), end.Add(-time.Duration(i-1)*step)
		rep, err := cl.Drift(ctx, apiclient.DriftOptions{Model: q.Model, Release: q.Release, Selector: q.Selector, From: from, To: to})
		if err != nil {
			return nil, err
		}
		out = append(out, bucket{From: from, To: to, Report: rep})
	}
	return out, nil
}

// releaseCharts are one model release's charts.
type releaseCharts struct {
	Model    string
	Release  uint64
	Latest   api.ReleaseDrift
	PSI, JS  template.HTML
	Features template.HTML
	// Hists are the histograms of the features with the highest drift and
	// of the prediction, current (the range) against baseline.
	Hists        []histChart
	FeatureLinks []featureLink
	// NoFeature is set when the feature asked for has no histogram here.
	NoFeature bool
}

func (c *Console) drift(w http.ResponseWriter, r *http.Request, u user) {
	qv := r.URL.Query()
	q := driftQuery{Model: qv.Get("model"), Selector: qv.Get("selector"), Range: qv.Get("range"), By: qv.Get("by"), Feature: qv.Get("feature")}
	if _, ok := driftRanges[q.Range]; !ok {
		q.Range = "6h"
	}
	if s := qv.Get("release"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			c.render(w, r, http.StatusBadRequest, "error", u, map[string]any{"Status": 400, "Error": "release must be a number"})
			return
		}
		q.Release = v
	}
	cl := c.client(u)
	buckets, err := fetchDrift(r.Context(), cl, q, c.cfg.Now())
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	charts := driftCharts(buckets, q)
	data := map[string]any{"Query": q, "Ranges": []string{"1h", "6h", "24h", "7d"}, "Charts": charts}
	if q.By != "" {
		cohorts, hists, err := c.cohortChart(r.Context(), cl, q)
		if err != nil {
			c.apiError(w, r, u, err)
			return
		}
		data["Cohorts"], data["CohortHists"] = cohorts, hists
	}
	c.render(w, r, http.StatusOK, "drift", u, data)
}

// driftCharts turns the buckets into, per model release, lines of PSI and
// of JS per feature over time with the alert thresholds, and bars of the
// latest scores per feature.
func driftCharts(buckets []bucket, q driftQuery) []releaseCharts {
	type key struct {
		model   string
		release uint64
	}
	type acc struct {
		psi, js map[string][]chart.Point
		latest  api.ReleaseDrift
		hists   histograms
	}
	accs := map[key]*acc{}
	var order []key
	for _, b := range buckets {
		mid := b.From.Add(b.To.Sub(b.From) / 2)
		for _, rd := range b.Report.Releases {
			k := key{rd.Model, rd.Release}
			a := accs[k]
			if a == nil {
				a = &acc{psi: map[string][]chart.Point{}, js: map[string][]chart.Point{}}
				accs[k] = a
				order = append(order, k)
			}
			a.latest = rd
			a.hists.add(rd)
			feats := rd.Features
			if rd.Prediction != nil {
				feats = append(append([]api.FeatureDrift(nil), feats...), *rd.Prediction)
			}
			for _, f := range feats {
				if !f.Scored {
					continue
				}
				a.psi[f.Name] = append(a.psi[f.Name], chart.Point{X: mid, Y: f.PSI})
				a.js[f.Name] = append(a.js[f.Name], chart.Point{X: mid, Y: f.JS})
			}
		}
	}
	sort.Slice(order, func(i, j int) bool {
		return order[i].model < order[j].model || order[i].model == order[j].model && order[i].release < order[j].release
	})
	out := make([]releaseCharts, 0, len(order))
	for _, k := range order {
		a := accs[k]
		th := a.latest.Thresholds
		title := fmt.Sprintf("%s release %d", k.model, k.release)
		rc := releaseCharts{Model: k.model, Release: k.release, Latest: a.latest}
		rc.PSI = template.HTML(chart.Line{Title: title + ": PSI per feature (highest " + strconv.Itoa(maxSeries) + ")", XLabel: "time (UTC)", YLabel: "PSI (unitless)",
			Series: seriesOf(a.psi), Thresholds: []chart.Threshold{{Value: th.PSI, Label: "alert"}, {Value: th.PSIWarn, Label: "warn"}}}.SVG())
		rc.JS = template.HTML(chart.Line{Title: title + ": Jensen-Shannon distance per feature (highest " + strconv.Itoa(maxSeries) + ")", XLabel: "time (UTC)", YLabel: "JS distance (bits, 0–1)",
			Series: seriesOf(a.js), Thresholds: []chart.Threshold{{Value: th.JS, Label: "alert"}}}.SVG())
		var cats []string
		var psi, js []float64
		feats := append([]api.FeatureDrift(nil), a.latest.Features...)
		sort.SliceStable(feats, func(i, j int) bool { return feats[i].PSI > feats[j].PSI })
		if len(feats) > 2*maxSeries {
			feats = feats[:2*maxSeries]
		}
		for _, f := range feats {
			cats = append(cats, f.Name)
			psi, js = append(psi, f.PSI), append(js, f.JS)
		}
		rc.Features = template.HTML(chart.Bars{Title: title + ": latest slice, highest PSI features", XLabel: "feature", YLabel: "score (unitless)",
			Categories: cats, Groups: []chart.BarGroup{{Name: "PSI", Values: psi}, {Name: "JS", Values: js}},
			Thresholds: []chart.Threshold{{Value: th.PSI, Label: "PSI alert"}}}.SVG())
		rc.NoFeature = q.Feature != ""
		for _, h := range a.hists.pick(q.Feature) {
			rc.NoFeature = rc.NoFeature && (h.predict || h.name != q.Feature)
			rc.Hists = append(rc.Hists, histChart{Name: h.name, Anchor: histAnchor(k.model, k.release, h.name, h.predict),
				SVG: template.HTML(h.chart(title, q.Range, th, nil).SVG())})
		}
		rc.FeatureLinks = featureLinks(q, k.model, k.release, &a.hists)
		out = append(out, rc)
	}
	return out
}

// maxSeries caps the lines of one chart: a model may monitor dozens of
// features; the chart keeps those that reached the highest scores.
const maxSeries = 8

// seriesOf returns the series of m, the maxSeries with the highest peaks,
// by name.
func seriesOf(m map[string][]chart.Point) []chart.Series {
	type peak struct {
		name string
		top  float64
	}
	peaks := make([]peak, 0, len(m))
	for n, ps := range m {
		p := peak{name: n}
		for _, pt := range ps {
			p.top = max(p.top, pt.Y)
		}
		peaks = append(peaks, p)
	}
	sort.Slice(peaks, func(i, j int) bool {
		return peaks[i].top > peaks[j].top || peaks[i].top == peaks[j].top && peaks[i].name < peaks[j].name
	})
	if len(peaks) > maxSeries {
		peaks = peaks[:maxSeries]
	}
	sort.Slice(peaks, func(i, j int) bool { return peaks[i].name < peaks[j].name })
	out := make([]chart.Series, len(peaks))
	for i, p := range peaks {
		out[i] = chart.Series{Name: p.name, Points: m[p.name]}
	}
	return out
}

// maxCohorts caps the cohorts compared at once (one drift query each).
const maxCohorts = 12

// cohortChart compares the worst PSI and JS of each value of the label
// q.By over the whole range, and draws the histograms of q.Feature (the
// prediction when none) of each cohort against the baseline.
func (c *Console) cohortChart(ctx context.Context, cl *apiclient.Client, q driftQuery) (template.HTML, []histChart, error) {
	devs, err := cl.ListDevices(ctx, apiclient.ListOptions{Selector: q.Selector, Limit: maxDevicesShown})
	if err != nil {
		return "", nil, err
	}
	seen := map[string]bool{}
	var values []string
	for _, d := range devs {
		if v, ok := d.Labels[q.By]; ok && !seen[v] {
			seen[v] = true
			values = append(values, v)
		}
	}
	sort.Strings(values)
	if len(values) > maxCohorts {
		values = values[:maxCohorts]
	}
	var psi, js []float64
	var reports []api.DriftReport
	for _, v := range values {
		sel := q.By + "=" + v
		if q.Selector != "" {
			sel = q.Selector + "," + sel
		}
		rep, err := cl.Drift(ctx, apiclient.DriftOptions{Model: q.Model, Release: q.Release, Selector: sel, Since: driftRanges[q.Range]})
		if err != nil {
			return "", nil, err
		}
		reports = append(reports, rep)
		var p, j float64
		for _, rd := range rep.Releases {
			p, j = max(p, rd.Max.PSI), max(j, rd.Max.JS)
		}
		psi, js = append(psi, p), append(js, j)
	}
	return template.HTML(chart.Bars{Title: "worst drift by " + q.By + " over " + q.Range, XLabel: q.By, YLabel: "score (unitless)",
		Categories: values, Groups: []chart.BarGroup{{Name: "PSI", Values: psi}, {Name: "JS", Values: js}}}.SVG()), cohortHists(q, q.Feature, values, reports), nil
}
