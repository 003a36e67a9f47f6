package chart

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

// node is a parsed SVG element.
type node struct {
	Name     string
	Attrs    map[string]string
	Text     string
	Children []*node
}

func parse(t *testing.T, b []byte) *node {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(b))
	var stack []*node
	var root *node
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v\n%s", err, b)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			n := &node{Name: tk.Name.Local, Attrs: map[string]string{}}
			for _, a := range tk.Attr {
				n.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, n)
			} else {
				root = n
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].Text += string(tk)
			}
		}
	}
	if root == nil || root.Name != "svg" {
		t.Fatalf("root is not <svg>: %s", b)
	}
	return root
}

// find returns the elements named name (any depth) whose class contains
// class ("" for any).
func (n *node) find(name, class string) []*node {
	var out []*node
	var walk func(*node)
	walk = func(m *node) {
		if m.Name == name && (class == "" || strings.Contains(" "+m.Attrs["class"]+" ", " "+class+" ")) {
			out = append(out, m)
		}
		for _, c := range m.Children {
			walk(c)
		}
	}
	walk(n)
	return out
}

func (n *node) texts() []string {
	var out []string
	for _, t := range n.find("text", "") {
		out = append(out, t.Text)
	}
	return out
}

func num(t *testing.T, s string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatalf("%q is not a number", s)
	}
	return v
}

func contains(list []string, want string) bool {
	for _, s := range list {
		if strings.Contains(s, want) {
			return true
		}
	}
	return false
}

// TestLineChart: axes carry their labels with units and tick values, each
// series is a path through its points in time order, higher values are
// drawn higher, and the threshold line sits at its value on the y scale.
func TestLineChart(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	svg := Line{
		Title: "PSI per feature", XLabel: "time (UTC)", YLabel: "PSI (unitless)",
		Series: []Series{
			{Name: "pixels", Points: []Point{{t0, 0.05}, {t0.Add(time.Hour), 0.3}, {t0.Add(2 * time.Hour), math.NaN()}}},
			{Name: "brightness", Points: []Point{{t0, 0.1}, {t0.Add(2 * time.Hour), 0.15}}},
		},
		Thresholds: []Threshold{{Value: 0.25, Label: "alert"}},
	}.SVG()
	root := parse(t, svg)
	texts := root.texts()
	for _, want := range []string{"PSI per feature", "time (UTC)", "PSI (unitless)", "pixels", "brightness", "alert 0.25", "12:00", "14:00"} {
		if !contains(texts, want) {
			t.Errorf("no text %q in %q", want, texts)
		}
	}
	series := root.find("g", "series")
	if len(series) != 2 || series[0].Attrs["data-name"] != "pixels" {
		t.Fatalf("series groups: %d", len(series))
	}
	// The NaN point is left out: two circles in the first series.
	pix := series[0].find("circle", "")
	if len(pix) != 2 {
		t.Fatalf("pixels has %d points drawn, want 2 (NaN left out)", len(pix))
	}
	x0, y0 := num(t, pix[0].Attrs["cx"]), num(t, pix[0].Attrs["cy"])
	x1, y1 := num(t, pix[1].Attrs["cx"]), num(t, pix[1].Attrs["cy"])
	if !(x1 > x0) || !(y1 < y0) {
		t.Errorf("0.05 then 0.3 an hour later drawn at (%v,%v) then (%v,%v): later must be right, higher must be up", x0, y0, x1, y1)
	}
	// The threshold 0.25 lies between the two points' heights, in proportion.
	th := root.find("g", "threshold")
	if len(th) != 1 {
		t.Fatalf("%d threshold lines", len(th))
	}
	ty := num(t, th[0].find("line", "")[0].Attrs["y1"])
	want := y0 + (y1-y0)*(0.25-0.05)/(0.3-0.05)
	if math.Abs(ty-want) > 0.5 {
		t.Errorf("threshold drawn at y=%v, want %v on the points' scale", ty, want)
	}
	if th[0].find("line", "")[0].Attrs["stroke-dasharray"] == "" {
		t.Error("threshold line is not dashed")
	}
}

// TestBarChart: one bar per group and category, heights in proportion to
// the values, categories and legend labelled.
func TestBarChart(t *testing.T) {
	svg := Bars{
		Title: "pixels histogram", XLabel: "value", YLabel: "share of values (%)",
		Categories: []string{"0–0.5", "0.5–1"},
		Groups:     []BarGroup{{Name: "baseline", Values: []float64{60, 40}}, {Name: "current", Values: []float64{20, 80}}},
	}.SVG()
	root := parse(t, svg)
	bars := root.find("rect", "bar")
	if len(bars) != 4 {
		t.Fatalf("%d bars, want 4", len(bars))
	}
	h := func(i int) float64 { return num(t, bars[i].Attrs["height"]) }
	// bars in order: cat0 baseline, cat0 current, cat1 baseline, cat1 current
	if math.Abs(h(3)/h(0)-80.0/60) > 0.01 || math.Abs(h(1)/h(2)-20.0/40) > 0.01 {
		t.Errorf("bar heights %v %v %v %v not in proportion to 60 20 40 80", h(0), h(1), h(2), h(3))
	}
	for _, want := range []string{"pixels histogram", "value", "share of values (%)", "0–0.5", "0.5–1", "baseline", "current", "80"} {
		if !contains(root.texts(), want) {
			t.Errorf("no text %q", want)
		}
	}
}

// TestChartEscapesText: names from the fleet cannot inject markup.
func TestChartEscapesText(t *testing.T) {
	evil := `</text><script>alert(1)</script>`
	svg := Line{Title: evil, YLabel: evil, Series: []Series{{Name: evil, Points: []Point{{time.Unix(0, 0), 1}}}}}.SVG()
	root := parse(t, svg)
	if len(root.find("script", "")) != 0 || strings.Contains(string(svg), "<script") {
		t.Fatalf("markup injected: %s", svg)
	}
	if !contains(root.texts(), evil) {
		t.Error("the title was not kept as text")
	}
}

func TestEmptyChart(t *testing.T) {
	root := parse(t, Line{Title: "t", YLabel: "JS (bits)"}.SVG())
	if len(root.find("text", "no-data")) != 1 {
		t.Error("an empty chart does not say so")
	}
	root = parse(t, Bars{Title: "t"}.SVG())
	if len(root.find("text", "no-data")) != 1 {
		t.Error("an empty bar chart does not say so")
	}
}

func TestNiceTicks(t *testing.T) {
	for _, c := range []struct {
		hi   float64
		want string
	}{{1, "[0 0.2 0.4 0.6 0.8 1]"}, {0.27, "[0 0.05 0.1 0.15 0.2 0.25 0.3]"}, {0, "[0 0.2 0.4 0.6 0.8 1]"}, {730, "[0 100 200 300 400 500 600 700 800]"}} {
		got := niceTicks(0, c.hi, 5)
		if s := fmtFloats(got); s != c.want {
			t.Errorf("niceTicks(0, %v) = %s, want %s", c.hi, s, c.want)
		}
	}
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, f := range v {
		s[i] = strconv.FormatFloat(f, 'g', -1, 64)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// FuzzSVG: whatever names and values the fleet sends, the SVG is
// well-formed XML with no element but the chart's own.
func FuzzSVG(f *testing.F) {
	f.Add("pixels", "alert", 0.1, 0.3, -1.0, int64(0), int64(3600))
	f.Add("</text><script>x</script>", "&amp;\x00", math.Inf(1), math.NaN(), 1e308, int64(-5), int64(5))
	f.Fuzz(func(t *testing.T, name, label string, a, b, th float64, t0, t1 int64) {
		pts := []Point{{time.Unix(t0, 0), a}, {time.Unix(t1, 0), b}}
		for _, svg := range [][]byte{
			Line{Title: name, XLabel: label, YLabel: label, Series: []Series{{Name: name, Points: pts}}, Thresholds: []Threshold{{th, label}}}.SVG(),
			Bars{Title: name, Categories: []string{name, label}, Groups: []BarGroup{{Name: label, Values: []float64{a, b}}}, Thresholds: []Threshold{{th, label}}}.SVG(),
		} {
			dec := xml.NewDecoder(bytes.NewReader(svg))
			for {
				tok, err := dec.Token()
				if err == io.EOF {
					break
				}
				if err != nil {
					// Text that is not valid XML characters (control bytes)
					// must have been escaped or dropped by the chart.
					t.Fatalf("not well-formed: %v\n%q", err, svg)
				}
				if se, ok := tok.(xml.StartElement); ok {
					switch se.Name.Local {
					case "svg", "title", "rect", "text", "g", "line", "path", "circle":
					default:
						t.Fatalf("unexpected element <%s>", se.Name.Local)
					}
				}
			}
		}
	})
}
