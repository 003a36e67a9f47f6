package chart

import (
	"fmt"
	"math"
	"strings"
)

// Histogram compares distributions binned on the same bins: for each bin,
// one bar per group with that group's share of its values, side by side,
// so a baseline and what the devices see now compare at a glance whatever
// their sizes. Numeric bins come from Edges: n increasing edges make n+1
// bins, the first below Edges[0] (underflow), the last at or above
// Edges[n-1] (overflow); the edges are marked and labelled on the x axis.
// Categorical bins come from Categories, one bin each and one last bin for
// any other value. A group's counts beyond the bins are ignored and
// missing ones count as zero.
type Histogram struct {
	Title    string
	Subtitle string // under the title: the scores and thresholds, say
	XLabel   string // the value and its unit
	Edges    []float64
	// Categories is used when Edges is empty.
	Categories []string
	Groups     []HistGroup
	Width      int // default 640
	Height     int // default 300
}

// HistGroup is one distribution: its count per bin.
type HistGroup struct {
	Name   string
	Counts []uint64
}

// maxLabelRunes shortens category names on the axis; the bar's tooltip
// keeps the whole name.
const maxLabelRunes = 14

// Bins returns the histogram's bin names: numeric bins as intervals
// ("< 0", "[0, 0.5)", "≥ 1"), categorical bins by category then "other".
func (h Histogram) Bins() []string {
	if len(h.Edges) == 0 {
		if len(h.Categories) == 0 {
			return nil
		}
		return append(append([]string(nil), h.Categories...), "other")
	}
	n := len(h.Edges)
	out := make([]string, 0, n+1)
	out = append(out, "< "+formatTick(h.Edges[0]))
	for i := 1; i < n; i++ {
		out = append(out, "["+formatTick(h.Edges[i-1])+", "+formatTick(h.Edges[i])+")")
	}
	return append(out, "≥ "+formatTick(h.Edges[n-1]))
}

// SVG renders the histogram; the y axis is each group's share of its
// values in percent.
func (h Histogram) SVG() []byte {
	bins := h.Bins()
	names := make([]string, len(h.Groups))
	shares := make([][]float64, len(h.Groups))
	hi := 0.0
	for gi, g := range h.Groups {
		total := 0.0 // a float: counts near 2^64 add without wrapping
		for i := 0; i < len(bins) && i < len(g.Counts); i++ {
			total += float64(g.Counts[i])
		}
		names[gi] = fmt.Sprintf("%s (%.0f values)", g.Name, total)
		shares[gi] = make([]float64, len(bins))
		if total == 0 {
			continue
		}
		for i := 0; i < len(bins) && i < len(g.Counts); i++ {
			s := 100 * float64(g.Counts[i]) / total
			shares[gi][i] = s
			hi = math.Max(hi, s)
		}
	}
	f := newFrame(h.Title, h.Width, h.Height, len(h.Groups))
	if h.Subtitle != "" {
		fmt.Fprintf(f.b, `<text class="subtitle" x="%d" y="34" font-size="11" text-anchor="middle">%s</text>`, f.w/2, esc(h.Subtitle))
		f.y0 += 14
	}
	f.yAxis("share of values (%)", hi)
	f.xLabel(h.XLabel)
	if len(bins) == 0 || len(h.Groups) == 0 {
		f.empty()
		f.legend(names)
		return f.end()
	}
	slot := (f.x1 - f.x0) / float64(len(bins))
	bw := slot * 0.8 / float64(len(h.Groups))
	for i, bin := range bins {
		left := f.x0 + float64(i)*slot + slot*0.1
		for gi, g := range h.Groups {
			var n uint64
			if i < len(g.Counts) {
				n = g.Counts[i]
			}
			y := f.y(shares[gi][i])
			fmt.Fprintf(f.b, `<rect class="bar" data-bin="%d" x="%.1f" y="%.1f" width="%.2f" height="%.1f" fill="%s"><title>%s %s: %s%% (%d)</title></rect>`,
				i, left+float64(gi)*bw, y, bw, f.y1-y, palette[gi%len(palette)], esc(g.Name), esc(bin), formatTick(shares[gi][i]), n)
		}
	}
	fmt.Fprintf(f.b, `<g class="x-axis" font-size="11">`)
	if len(h.Edges) > 0 {
		// Each edge is a tick at its bin boundary; about ten are labelled.
		every := (len(h.Edges) + 9) / 10
		for i, e := range h.Edges {
			x := f.x0 + float64(i+1)*slot
			fmt.Fprintf(f.b, `<line class="edge" x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#333"/>`, x, f.y1, x, f.y1+4)
			if i%every == 0 || i == len(h.Edges)-1 {
				fmt.Fprintf(f.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, x, f.y1+16, formatTick(e))
			}
		}
		// The open-ended bins say so under them.
		fmt.Fprintf(f.b, `<text class="tick underflow" x="%.1f" y="%.1f" text-anchor="middle" fill="#555">under</text>`, f.x0+slot/2, f.y1+28)
		fmt.Fprintf(f.b, `<text class="tick overflow" x="%.1f" y="%.1f" text-anchor="middle" fill="#555">over</text>`, f.x1-slot/2, f.y1+28)
	} else {
		every := max(1, (len(bins)+11)/12)
		for i, bin := range bins {
			if i%every == 0 || i == len(bins)-1 {
				fmt.Fprintf(f.b, `<text class="tick" x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, f.x0+float64(i)*slot+slot/2, f.y1+16, esc(shorten(bin)))
			}
		}
	}
	fmt.Fprintf(f.b, `</g>`)
	f.legend(names)
	return f.end()
}

func shorten(s string) string {
	r := []rune(s)
	if len(r) <= maxLabelRunes {
		return s
	}
	return strings.TrimSpace(string(r[:maxLabelRunes-1])) + "…"
}
