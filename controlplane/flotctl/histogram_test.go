package flotctl

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

func render(rep api.DriftReport, worst int, feature string) string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	printDrift(tw, rep, worst, feature)
	tw.Flush()
	return b.String()
}

// rowOf returns the line of out starting with bin.
func rowOf(t *testing.T, out, bin string) string {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, bin+" ") {
			return l
		}
	}
	t.Fatalf("no row %q in\n%s", bin, out)
	return ""
}

// TestPrintHistogram: -feature prints that feature's row and one line per
// bin (the open-ended ones named as such) with each side's share and
// count, bars on one scale (the largest share histBarWidth long), and
// other features left out; the prediction answers to its name.
func TestPrintHistogram(t *testing.T) {
	rd := api.ReleaseDrift{Model: "digits", Release: 1, Baseline: true, State: "alert",
		Features: []api.FeatureDrift{
			{Name: "pixel_0", Scored: true, JS: 0.3, PSI: 0.9, State: "alert",
				Histogram: &api.HistogramView{Edges: []float64{0, 0.5}, Baseline: []uint64{0, 75, 25}, Current: []uint64{1, 1, 2}}},
			{Name: "pixel_1", Scored: true, State: "ok"},
		},
		Prediction: &api.FeatureDrift{Name: "digit", Scored: true, State: "ok",
			Histogram: &api.HistogramView{Categories: []string{"0", "1"}, Baseline: []uint64{1, 1, 0}}},
	}
	rep := api.DriftReport{Releases: []api.ReleaseDrift{rd}}
	out := render(rep, 0, "pixel_0")
	if strings.Contains(out, "pixel_1") {
		t.Errorf("another feature printed:\n%s", out)
	}
	if !strings.Contains(out, "pixel_0  0.3000  0.9000") || !strings.Contains(out, "baseline 100 values, current 4 values") {
		t.Errorf("feature row or totals missing:\n%s", out)
	}
	bars := func(row string) []int {
		var n []int
		for _, f := range strings.Fields(row) {
			if strings.HasPrefix(f, "█") || f == "▏" {
				n = append(n, utf8.RuneCountInString(f))
			}
		}
		return n
	}
	under, mid, over := rowOf(t, out, "< 0"), rowOf(t, out, "[0, 0.5)"), rowOf(t, out, "≥ 0.5")
	if !strings.Contains(under, "0.0% (0)") || !strings.Contains(under, "25.0% (1)") {
		t.Errorf("underflow row %q", under)
	}
	// 75 % is the largest share: the full width; 25 % a third of it.
	if b := bars(mid); !strings.Contains(mid, "75.0% (75)") || len(b) != 2 || b[0] != histBarWidth || b[1] != histBarWidth/3 {
		t.Errorf("row %q: bars %v, want %d and %d", mid, b, histBarWidth, histBarWidth/3)
	}
	if b := bars(over); !strings.Contains(over, "50.0% (2)") || len(b) != 2 || b[1] != histBarWidth*2/3 {
		t.Errorf("overflow row %q: bars %v", over, b)
	}

	// The prediction: categories, then other; no current counts (binned on
	// other bins) is said, and only the baseline drawn.
	out = render(rep, 0, "digit")
	if !strings.Contains(out, "binned on other bins") || !strings.Contains(rowOf(t, out, "other"), "0.0% (0)") {
		t.Errorf("prediction histogram:\n%s", out)
	}
	if row := rowOf(t, out, "1"); !strings.Contains(row, "50.0% (1)") || !strings.HasSuffix(strings.TrimSpace(row), "-") {
		t.Errorf("row %q: want the baseline's share and no current", row)
	}
	if !hasFeature(rep, "prediction:digit") || hasFeature(rep, "pixel_9") {
		t.Error("hasFeature")
	}
}
