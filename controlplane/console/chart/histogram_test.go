package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strings"
	"testing"
)

// TestHistogramNumeric: each group is drawn as its share of its own
// values per bin (so a baseline of 1000 and a current of 10 compare), the
// bars sit in their bin's slot in bin order, every edge is a tick at a bin
// boundary, the open-ended bins are labelled under and over, and the axes
// and legend carry their names with units and totals.
func TestHistogramNumeric(t *testing.T) {
	svg := Histogram{
		Title: "pixels", Subtitle: "PSI 0.31 (alert 0.25)", XLabel: "pixel value (0–1)",
		Edges:  []float64{0, 0.5, 1},
		Groups: []HistGroup{{Name: "baseline", Counts: []uint64{0, 500, 500, 0}}, {Name: "current", Counts: []uint64{1, 1, 6, 2}}},
	}.SVG()
	root := parse(t, svg)
	bars := root.find("rect", "bar")
	if len(bars) != 8 {
		t.Fatalf("%d bars, want 2 groups × 4 bins", len(bars))
	}
	h := func(i int) float64 { return num(t, bars[i].Attrs["height"]) }
	x := func(i int) float64 { return num(t, bars[i].Attrs["x"]) }
	// bars in order: bin0 baseline, bin0 current, bin1 baseline, …
	// baseline 0 50 50 0 %, current 10 10 60 20 %.
	if h(0) != 0 || h(6) != 0 {
		t.Errorf("empty baseline bins drawn %v, %v high", h(0), h(6))
	}
	if r := h(2) / h(5); math.Abs(r-50.0/60) > 0.01 {
		t.Errorf("baseline 50 %% against current 60 %%: heights ratio %v", r)
	}
	if r := h(7) / h(1); math.Abs(r-2) > 0.01 {
		t.Errorf("current 20 %% against 10 %%: heights ratio %v", r)
	}
	for i := 1; i < len(bars); i++ {
		if !(x(i) > x(i-1)) {
			t.Errorf("bar %d at x=%v not right of bar %d at %v", i, x(i), i-1, x(i-1))
		}
	}
	// Three edge ticks, between the bins: the first edge between the
	// underflow bin's bars and the next bin's.
	edges := root.find("line", "edge")
	if len(edges) != 3 {
		t.Fatalf("%d edge ticks, want 3", len(edges))
	}
	if e0 := num(t, edges[0].Attrs["x1"]); !(e0 > x(1) && e0 < x(2)) {
		t.Errorf("edge 0 at x=%v, not between bin 0 (%v) and bin 1 (%v)", e0, x(1), x(2))
	}
	texts := root.texts()
	for _, want := range []string{"pixels", "PSI 0.31 (alert 0.25)", "pixel value (0–1)", "share of values (%)",
		"baseline (1000 values)", "current (10 values)", "under", "over", "0.5"} {
		if !contains(texts, want) {
			t.Errorf("no text %q in %q", want, texts)
		}
	}
	// The tooltips name the bins as intervals, with share and count.
	var tips []string
	for _, b := range bars {
		for _, c := range b.Children {
			tips = append(tips, c.Text)
		}
	}
	for _, want := range []string{"baseline < 0: 0% (0)", "current [0.5, 1): 60% (6)", "current ≥ 1: 20% (2)"} {
		if !contains(tips, want) {
			t.Errorf("no tooltip %q in %q", want, tips)
		}
	}
}

// TestHistogramCategorical: categorical bins are named by category, then
// "other"; long names are shortened on the axis but whole in the tooltip.
func TestHistogramCategorical(t *testing.T) {
	long := "a-very-long-category-name"
	h := Histogram{Title: "colour", XLabel: "colour", Categories: []string{"red", long},
		Groups: []HistGroup{{Name: "baseline", Counts: []uint64{2, 1, 1}}, {Name: "current", Counts: []uint64{0, 0, 0}}}}
	if got := strings.Join(h.Bins(), "|"); got != "red|"+long+"|other" {
		t.Errorf("bins %q", got)
	}
	root := parse(t, h.SVG())
	texts := root.texts()
	for _, want := range []string{"red", "a-very-long-c…", "other", "current (0 values)"} {
		if !contains(texts, want) {
			t.Errorf("no text %q in %q", want, texts)
		}
	}
	if contains(texts, long) {
		t.Error("the long category name is not shortened on the axis")
	}
	bars := root.find("rect", "bar")
	if len(bars) != 6 || !strings.Contains(bars[2].Children[0].Text, long) {
		t.Fatalf("%d bars; tooltip %q", len(bars), bars[2].Children[0].Text)
	}
	// No current values: its bars are flat, the baseline's are not.
	if num(t, bars[1].Attrs["height"]) != 0 || num(t, bars[0].Attrs["height"]) == 0 {
		t.Error("an empty group is not drawn flat beside a full one")
	}
}

// TestHistogramMismatch: counts shorter or longer than the bins neither
// panic nor draw extra bars; no bins says there is no data.
func TestHistogramMismatch(t *testing.T) {
	root := parse(t, Histogram{Edges: []float64{1}, Groups: []HistGroup{{Name: "b", Counts: []uint64{1}}, {Name: "c", Counts: []uint64{1, 2, 3, 4}}}}.SVG())
	if n := len(root.find("rect", "bar")); n != 4 {
		t.Errorf("%d bars, want 2 bins × 2 groups", n)
	}
	if !contains(root.texts(), "c (3 values)") {
		t.Errorf("counts beyond the bins were totalled: %q", root.texts())
	}
	root = parse(t, Histogram{Title: "t", Groups: []HistGroup{{Name: "b"}}}.SVG())
	if len(root.find("text", "no-data")) != 1 {
		t.Error("a histogram without bins does not say so")
	}
}

// FuzzHistogram: whatever names, edges and counts the fleet or a baseline
// holds, the SVG is well-formed XML with only the chart's own elements.
func FuzzHistogram(f *testing.F) {
	f.Add("pixels", "red", 0.0, 0.5, uint64(3), uint64(0), false)
	f.Add("</text><script>x</script>", "&\x00\xff", math.NaN(), math.Inf(-1), uint64(math.MaxUint64), uint64(math.MaxUint64), true)
	f.Fuzz(func(t *testing.T, name, cat string, e0, e1 float64, c0, c1 uint64, categorical bool) {
		h := Histogram{Title: name, Subtitle: cat, XLabel: name, Groups: []HistGroup{{Name: name, Counts: []uint64{c0, c1, c0}}, {Name: cat, Counts: []uint64{c1}}}}
		if categorical {
			h.Categories = []string{cat, name}
		} else {
			h.Edges = []float64{e0, e1}
		}
		dec := xml.NewDecoder(bytes.NewReader(h.SVG()))
		for {
			tok, err := dec.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("not well-formed: %v", err)
			}
			if se, ok := tok.(xml.StartElement); ok {
				switch se.Name.Local {
				case "svg", "title", "rect", "text", "g", "line":
				default:
					t.Fatalf("unexpected element <%s>", se.Name.Local)
				}
			}
		}
	})
}
