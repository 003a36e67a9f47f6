// Package chart draws the console's charts as standalone SVG, on the
// server: line charts over time (drift scores per feature) and grouped bar
// charts (histograms, current against baseline). Every chart has a title,
// labelled axes with their units, tick values, a legend, and threshold
// lines marked and named. Text is escaped; no script, no external
// reference, so the SVG is safe to inline in a page.
package chart

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"strconv"
	"strings"
	"time"
)

// Point is one sample of a series; X is a time for line charts.
type Point struct {
	X time.Time
	Y float64
}

// Series is one named line.
type Series struct {
	Name   string
	Points []Point
}

// Threshold is a horizontal line drawn across the plot, e.g. an alert
// level.
type Threshold struct {
	Value float64
	Label string
}

// Line is a line chart of series over time.
type Line struct {
	Title      string
	XLabel     string // e.g. "time (UTC)"
	YLabel     string // with its unit, e.g. "PSI (unitless)"
	Series     []Series
	Thresholds []Threshold
	Width      int // default 640
	Height     int // default 300
}

// Bars is a grouped bar chart: one bar per group in each category (a
// histogram's bins, current against baseline).
type Bars struct {
	Title      string
	XLabel     string
	YLabel     string
	Categories []string
	Groups     []BarGroup
	Thresholds []Threshold
	Width      int
	Height     int
}

// BarGroup is one set of bars, one value per category.
type BarGroup struct {
	Name   string
	Values []float64
}

// palette is colour-blind-safe (Okabe–Ito).
var palette = []string{"#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"}

const thresholdColour = "#d00000"

// margins around the plot area.
const (
	marginLeft   = 64
	marginRight  = 16
	marginTop    = 32
	marginBottom = 56
	legendRow    = 16
)

type frame struct {
	b              *bytes.Buffer
	w, h           int
	x0, y0, x1, y1 float64 // plot area: x0 left, y1 bottom
	ymin, ymax     float64
}

func newFrame(title string, w, h, legendRows int) *frame {
	if w <= 0 {
		w = 640
	}
	if h <= 0 {
		h = 300
	}
	h += legendRows * legendRow
	f := &frame{b: &bytes.Buffer{}, w: w, h: h,
		x0: marginLeft, y0: marginTop, x1: float64(w - marginRight), y1: float64(h - marginBottom - legendRows*legendRow)}
	fmt.Fprintf(f.b, `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		w, h, w, h, esc(title))
	fmt.Fprintf(f.b, `<title>%s</title>`, esc(title))
	fmt.Fprintf(f.b, `<rect x="0" y="0" width="%d" height="%d" fill="#ffffff"/>`, w, h)
	fmt.Fprintf(f.b, `<text class="title" x="%d" y="18" font-size="14" font-weight="bold" text-anchor="middle">%s</text>`, w/2, esc(title))
	return f
}

func (f *frame) y(v float64) float64 {
	if f.ymax == f.ymin {
		return f.y1
	}
	return f.y1 - (v-f.ymin)/(f.ymax-f.ymin)*(f.y1-f.y0)
}

// yAxis draws the y axis with nice ticks over [0, max] and its label.
func (f *frame) yAxis(label string, hi float64) {
	ticks := niceTicks(0, hi, 5)
	f.ymin, f.ymax = ticks[0], ticks[len(ticks)-1]
	fmt.Fprintf(f.b, `<g class="y-axis" font-size="11">`)
	fmt.Fprintf(f.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, f.x0, f.y0, f.x0, f.y1)
	for _, t := range ticks {
		y := f.y(t)
		fmt.Fprintf(f.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`, f.x0, y, f.x1, y)
		fmt.Fprintf(f.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="end" dominant-baseline="middle">%s</text>`, f.x0-4, y, formatTick(t))
	}
	cy := (f.y0 + f.y1) / 2
	fmt.Fprintf(f.b, `<text class="axis-label" x="14" y="%.1f" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`, cy, cy, esc(label))
	fmt.Fprintf(f.b, `</g>`)
}

func (f *frame) xLabel(label string) {
	fmt.Fprintf(f.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, f.x0, f.y1, f.x1, f.y1)
	fmt.Fprintf(f.b, `<text class="axis-label" x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, (f.x0+f.x1)/2, f.y1+36, esc(label))
}

// thresholds draws each threshold as a dashed line with its name and
// value; labels alternate between the right and left ends so that close
// thresholds do not print over each other.
func (f *frame) thresholds(ts []Threshold) {
	for i, t := range ts {
		if !finite(t.Value) {
			continue
		}
		y := f.y(t.Value)
		fmt.Fprintf(f.b, `<g class="threshold"><line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="6 4" stroke-width="1.5"/>`,
			f.x0, y, f.x1, y, thresholdColour)
		x, anchor := f.x1-2, "end"
		if i%2 == 1 {
			x, anchor = f.x0+4, "start"
		}
		fmt.Fprintf(f.b, `<text x="%.1f" y="%.1f" font-size="11" fill="%s" text-anchor="%s">%s %s</text></g>`,
			x, y-3, thresholdColour, anchor, esc(t.Label), formatTick(t.Value))
	}
}

func (f *frame) legend(names []string) {
	y := float64(f.h) - float64(len(names))*legendRow - 4
	for i, n := range names {
		c := palette[i%len(palette)]
		yy := y + float64(i)*legendRow
		fmt.Fprintf(f.b, `<g class="legend"><rect x="%.1f" y="%.1f" width="12" height="10" fill="%s"/><text x="%.1f" y="%.1f" font-size="11">%s</text></g>`,
			f.x0, yy, c, f.x0+16, yy+9, esc(n))
	}
}

func (f *frame) empty() {
	fmt.Fprintf(f.b, `<text class="no-data" x="%.1f" y="%.1f" font-size="12" text-anchor="middle" fill="#666">no data in this range</text>`,
		(f.x0+f.x1)/2, (f.y0+f.y1)/2)
}

func (f *frame) end() []byte {
	f.b.WriteString(`</svg>`)
	return f.b.Bytes()
}

// SVG renders the line chart. Non-finite values are left out.
func (l Line) SVG() []byte {
	f := newFrame(l.Title, l.Width, l.Height, len(l.Series))
	var tmin, tmax time.Time
	hi := 0.0
	n := 0
	for _, s := range l.Series {
		for _, p := range s.Points {
			if !finite(p.Y) {
				continue
			}
			if n == 0 || p.X.Before(tmin) {
				tmin = p.X
			}
			if n == 0 || p.X.After(tmax) {
				tmax = p.X
			}
			hi = math.Max(hi, p.Y)
			n++
		}
	}
	for _, t := range l.Thresholds {
		if finite(t.Value) {
			hi = math.Max(hi, t.Value*1.1)
		}
	}
	f.yAxis(l.YLabel, hi)
	f.xLabel(l.XLabel)
	if n == 0 {
		f.empty()
	} else {
		span := tmax.Sub(tmin)
		x := func(t time.Time) float64 {
			if span <= 0 {
				return (f.x0 + f.x1) / 2
			}
			return f.x0 + float64(t.Sub(tmin))/float64(span)*(f.x1-f.x0)
		}
		layout := "15:04"
		if span > 48*time.Hour {
			layout = "01-02 15:04"
		}
		fmt.Fprintf(f.b, `<g class="x-axis" font-size="11">`)
		for i := 0; i <= 4; i++ {
			t := tmin.Add(time.Duration(float64(span) * float64(i) / 4))
			xx := x(t)
			fmt.Fprintf(f.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, xx, f.y1, xx, f.y1+4)
			fmt.Fprintf(f.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, xx, f.y1+16, t.UTC().Format(layout))
			if span <= 0 {
				break
			}
		}
		fmt.Fprintf(f.b, `</g>`)
		for i, s := range l.Series {
			c := palette[i%len(palette)]
			fmt.Fprintf(f.b, `<g class="series" data-name="%s">`, esc(s.Name))
			var path bytes.Buffer
			for _, p := range s.Points {
				if !finite(p.Y) {
					continue
				}
				cmd := "L"
				if path.Len() == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&path, "%s%.1f %.1f ", cmd, x(p.X), f.y(p.Y))
				fmt.Fprintf(f.b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s %s: %s</title></circle>`,
					x(p.X), f.y(p.Y), c, esc(s.Name), p.X.UTC().Format("2006-01-02 15:04"), formatTick(p.Y))
			}
			fmt.Fprintf(f.b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"/></g>`, bytes.TrimSpace(path.Bytes()), c)
		}
	}
	f.thresholds(l.Thresholds)
	names := make([]string, len(l.Series))
	for i, s := range l.Series {
		names[i] = s.Name
	}
	f.legend(names)
	return f.end()
}

// SVG renders the bar chart. Non-finite values are drawn as zero.
func (c Bars) SVG() []byte {
	f := newFrame(c.Title, c.Width, c.Height, len(c.Groups))
	hi := 0.0
	for _, g := range c.Groups {
		for _, v := range g.Values {
			if finite(v) {
				hi = math.Max(hi, v)
			}
		}
	}
	for _, t := range c.Thresholds {
		if finite(t.Value) {
			hi = math.Max(hi, t.Value*1.1)
		}
	}
	f.yAxis(c.YLabel, hi)
	f.xLabel(c.XLabel)
	if len(c.Categories) == 0 || len(c.Groups) == 0 {
		f.empty()
	} else {
		slot := (f.x1 - f.x0) / float64(len(c.Categories))
		bw := slot * 0.8 / float64(len(c.Groups))
		every := max(1, len(c.Categories)/12) // at most about 12 category labels
		for i, cat := range c.Categories {
			left := f.x0 + float64(i)*slot + slot*0.1
			for gi, g := range c.Groups {
				v := 0.0
				if i < len(g.Values) && finite(g.Values[i]) {
					v = g.Values[i]
				}
				y := f.y(v)
				fmt.Fprintf(f.b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s</title></rect>`,
					left+float64(gi)*bw, y, bw, f.y1-y, palette[gi%len(palette)], esc(g.Name), esc(cat), formatTick(v))
			}
			if i%every == 0 {
				fmt.Fprintf(f.b, `<text class="tick" x="%.1f" y="%.1f" font-size="11" text-anchor="middle">%s</text>`, f.x0+float64(i)*slot+slot/2, f.y1+16, esc(cat))
			}
		}
	}
	f.thresholds(c.Thresholds)
	names := make([]string, len(c.Groups))
	for i, g := range c.Groups {
		names[i] = g.Name
	}
	f.legend(names)
	return f.end()
}

// niceTicks returns about n round tick values covering [lo, hi].
func niceTicks(lo, hi float64, n int) []float64 {
	if !finite(hi) || hi <= lo {
		hi = lo + 1
	}
	step := niceNum((hi-lo)/float64(n), true)
	start := math.Floor(lo/step) * step
	var out []float64
	for v := start; v < hi+step*0.999; v += step {
		// Round away the float error of the sum (0.6000000000000001).
		r, _ := strconv.ParseFloat(strconv.FormatFloat(math.Round(v/step)*step, 'g', 10, 64), 64)
		out = append(out, r)
		if len(out) > 2*n+2 {
			break
		}
	}
	if len(out) < 2 {
		out = append(out, start+step)
	}
	return out
}

func niceNum(x float64, round bool) float64 {
	exp := math.Floor(math.Log10(x))
	f := x / math.Pow(10, exp)
	var nf float64
	switch {
	case round && f < 1.5, !round && f <= 1:
		nf = 1
	case round && f < 3, !round && f <= 2:
		nf = 2
	case round && f < 7, !round && f <= 5:
		nf = 5
	default:
		nf = 10
	}
	return nf * math.Pow(10, exp)
}

func formatTick(v float64) string {
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// esc makes s safe as XML text: markup escaped, invalid UTF-8 and the
// characters XML 1.0 forbids (most control characters) replaced.
func esc(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r == '\t' || r == '\n' || r == '\r':
			return r
		case r < 0x20, r >= 0xD800 && r <= 0xDFFF, r == 0xFFFE, r == 0xFFFF:
			return '\uFFFD'
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	return html.EscapeString(s)
}
