// Package promscrape reads a Prometheus text-format page (a /metrics
// endpoint) into values, with the client library's own parser. The tests
// of both exporters, the demo and the simulator read metrics with it.
package promscrape

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// MaxPage caps a page read: a metrics page larger than this is refused.
const MaxPage = 32 << 20

// Families are a page's metric families by name.
type Families map[string]*dto.MetricFamily

// Get fetches url with hc and parses the page. The request asks for the
// text format; anything else, a status other than 200 or a page over
// MaxPage is an error.
func Get(ctx context.Context, hc *http.Client, url string) (Families, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("metrics %s: %s", url, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		return nil, fmt.Errorf("metrics %s: content type %q, want the text format", url, ct)
	}
	return Parse(resp.Body)
}

// Parse parses a page in the text format.
func Parse(r io.Reader) (Families, error) {
	lr := &countingReader{r: io.LimitReader(r, MaxPage+1)}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(lr)
	if lr.n > MaxPage {
		return nil, fmt.Errorf("metrics page over %d bytes", MaxPage)
	}
	if err != nil {
		return nil, err
	}
	return fams, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

// Value is the value of the sample of family name whose labels include
// all of want (name=value pairs): a gauge's or counter's value, or a
// histogram's sample count. ok is false when there is no such sample.
// With several matching samples their values are added.
func (f Families) Value(name string, want ...string) (v float64, ok bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		ok = true
		switch {
		case m.GetGauge() != nil:
			v += m.GetGauge().GetValue()
		case m.GetCounter() != nil:
			v += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			v += m.GetUntyped().GetValue()
		}
	}
	return v, ok
}

// Labels lists the values label takes across family name's samples,
// sorted and without repeats.
func (f Families) Labels(name, label string) []string {
	seen := map[string]bool{}
	for _, m := range f[name].GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				seen[lp.GetValue()] = true
			}
		}
	}
	out := make([]string, 0, len(seen))
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// Quantile estimates quantile q (0..1) of the histogram samples of family
// name matching want, merged, by linear interpolation within the bucket
// (what PromQL's histogram_quantile does). ok is false without samples.
func (f Families) Quantile(name string, q float64, want ...string) (v float64, ok bool) {
	type bucket struct{ le, n float64 }
	merged := map[float64]float64{}
	var total float64
	for _, m := range f[name].GetMetric() {
		h := m.GetHistogram()
		if h == nil || !hasLabels(m, want) {
			continue
		}
		total += float64(h.GetSampleCount())
		for _, b := range h.GetBucket() {
			merged[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		}
	}
	if total == 0 {
		return 0, false
	}
	bs := make([]bucket, 0, len(merged))
	for le, n := range merged {
		bs = append(bs, bucket{le, n})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	rank := q * total
	prevLe, prevN := 0.0, 0.0
	for _, b := range bs {
		if b.n >= rank {
			if math.IsInf(b.le, 1) {
				return prevLe, true
			}
			if b.n == prevN {
				return b.le, true
			}
			return prevLe + (b.le-prevLe)*(rank-prevN)/(b.n-prevN), true
		}
		prevLe, prevN = b.le, b.n
	}
	// Above the highest finite bucket: its bound is the best estimate.
	return prevLe, true
}

func hasLabels(m *dto.Metric, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == want[i] && lp.GetValue() == want[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
