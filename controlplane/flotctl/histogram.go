package flotctl

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// histBarWidth is the longest bar of a text histogram, in characters.
const histBarWidth = 24

// printHistogram prints f's histogram as rows of bins, each with the
// baseline's and the current share of their values (and counts) and a
// bar for each on one scale.
func printHistogram(tw io.Writer, f api.FeatureDrift) {
	h := f.Histogram
	if h == nil {
		fmt.Fprintln(tw, "\n  no histogram: no baseline for this value")
		return
	}
	bins := binNames(h)
	base, baseN := shares(h.Baseline, len(bins))
	var cur []float64
	var curN float64
	currentNote := ""
	switch {
	case len(h.Current) != len(h.Baseline):
		currentNote = "current: binned on other bins (another baseline), not shown"
	default:
		cur, curN = shares(h.Current, len(bins))
		if curN == 0 {
			currentNote = "current: no values in range"
		}
	}
	fmt.Fprintf(tw, "\nhistogram of %s: baseline %.0f values, current %.0f values; share of each one's values per bin\n", f.Name, baseN, curN)
	if currentNote != "" {
		fmt.Fprintln(tw, currentNote)
	}
	top := 0.0
	for i := range bins {
		top = math.Max(top, base[i])
		if cur != nil {
			top = math.Max(top, cur[i])
		}
	}
	fmt.Fprintln(tw, "BIN\tBASELINE\t\tCURRENT\t")
	for i, b := range bins {
		c, cbar := "-", ""
		if cur != nil {
			c, cbar = pct(cur[i], count(h.Current, i)), histBar(cur[i], top)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", b, pct(base[i], count(h.Baseline, i)), histBar(base[i], top), c, cbar)
	}
}

// binNames names numeric bins as intervals (the first and last open) and
// categorical bins by category, then "other".
func binNames(h *api.HistogramView) []string {
	if len(h.Edges) == 0 {
		if len(h.Categories) == 0 {
			return nil
		}
		return append(append([]string(nil), h.Categories...), "other")
	}
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', 4, 64) }
	n := len(h.Edges)
	out := []string{"< " + g(h.Edges[0])}
	for i := 1; i < n; i++ {
		out = append(out, "["+g(h.Edges[i-1])+", "+g(h.Edges[i])+")")
	}
	return append(out, "≥ "+g(h.Edges[n-1]))
}

// shares returns each of the first n counts as a percentage of their sum,
// and the sum.
func shares(counts []uint64, n int) ([]float64, float64) {
	out := make([]float64, n)
	total := 0.0
	for i := 0; i < n && i < len(counts); i++ {
		total += float64(counts[i])
	}
	if total == 0 {
		return out, 0
	}
	for i := 0; i < n && i < len(counts); i++ {
		out[i] = 100 * float64(counts[i]) / total
	}
	return out, total
}

func count(counts []uint64, i int) uint64 {
	if i < len(counts) {
		return counts[i]
	}
	return 0
}

func pct(v float64, n uint64) string { return fmt.Sprintf("%5.1f%% (%d)", v, n) }

// histBar draws v on a scale where top is histBarWidth characters; a share
// too small for one character still shows as a sliver.
func histBar(v, top float64) string {
	if top <= 0 || v <= 0 {
		return ""
	}
	n := int(math.Round(v / top * histBarWidth))
	if n == 0 {
		return "▏"
	}
	return strings.Repeat("█", n)
}
