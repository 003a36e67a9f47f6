package baseline_test

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/baseline"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestDigitsBaseline: constant pixels get one bin of their own, every
// feature's counts add up to the rows, the prediction is categorical over
// the ten digits, and the manifest validates with the baseline in it.
func TestDigitsBaseline(t *testing.T) {
	res := digitsBaseline(t)
	d := res.Drift
	if res.Rows != 1347 || len(d.Features) != 64 || d.Prediction == nil || len(d.Prediction.Categories) != 10 {
		t.Fatalf("rows %d, %d features, prediction %v", res.Rows, len(d.Features), d.Prediction)
	}
	for _, f := range d.Features {
		var n uint64
		for _, c := range f.Counts {
			n += c
		}
		if n != 1347 || len(f.Counts) != len(f.BinEdges)+1 || f.Tensor != "pixels" || f.Counts[0] != 0 || f.Counts[len(f.Counts)-1] != 0 {
			t.Fatalf("%s: counts %v over edges %v", f.Name, f.Counts, f.BinEdges)
		}
	}
	p0 := d.Features[0] // always 0 in digits
	if len(p0.BinEdges) != 2 || p0.BinEdges[0] != 0 || p0.Counts[1] != 1347 {
		t.Errorf("constant p0: edges %v counts %v", p0.BinEdges, p0.Counts)
	}
	if d.Features[36].Index != 36 || d.Features[36].Name != "p36" {
		t.Errorf("feature order: %v", d.Features[36])
	}
	if res.Variability == nil || d.Thresholds.GetJs() <= 0 {
		t.Errorf("no thresholds: %v", d.Thresholds)
	}
	m := &pb.BundleManifest{SchemaVersion: 1, Name: "digits", Release: 1, Kind: pb.BundleKind_BUNDLE_KIND_MODEL,
		Variants: []*pb.RuntimeVariant{{Runtime: "onnx", Entry: "model.onnx"}},
		Files:    []*pb.BundleFile{{Path: "model.onnx", Size: 1, Mode: 0o644, ChunkSize: pb.DefaultChunkSize, Sha256: make([]byte, 32), Chunks: []*pb.ChunkInfo{{Sha256: make([]byte, 32), Length: 1}}}},
		Drift:    d}
	if err := m.Validate(); err != nil {
		t.Fatalf("manifest with the baseline: %v", err)
	}
}

func TestFromCSVRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		csv string
		opt baseline.Options
	}{
		"empty":            {"", baseline.Options{}},
		"header only":      {"a,b\n", baseline.Options{}},
		"one row":          {"a\n1\n", baseline.Options{}},
		"not a number":     {"a\n1\nx\n", baseline.Options{}},
		"ragged":           {"a,b\n1,2\n3\n", baseline.Options{}},
		"repeated column":  {"a,a\n1,2\n3,4\n", baseline.Options{}},
		"empty name":       {"a,\n1,2\n3,4\n", baseline.Options{}},
		"no such feature":  {"a\n1\n2\n", baseline.Options{Features: []string{"b"}}},
		"no such pred":     {"a\n1\n2\n", baseline.Options{PredictionColumn: "y"}},
		"all NaN":          {"a\nnan\n\n", baseline.Options{}},
		"too many bins":    {"a\n1\n2\n", baseline.Options{Bins: 5000}},
		"only excluded":    {"label\n1\n2\n", baseline.Options{Exclude: []string{"label"}}},
		"too many columns": {strings.Repeat("c,", baseline.MaxColumns) + "c\n", baseline.Options{}},
	} {
		if _, err := baseline.FromCSV(strings.NewReader(c.csv), c.opt); !errors.Is(err, baseline.ErrData) {
			t.Errorf("%s: got %v, want ErrData", name, err)
		}
	}
}

func TestFromCSVValues(t *testing.T) {
	csv := "x,y,pred\n1,nan,0.5\n2,inf,0.25\n3,-inf,0.5\n,4,0.5\n"
	res, err := baseline.FromCSV(strings.NewReader(csv), baseline.Options{PredictionColumn: "pred", Bins: 4, WindowRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	x, y, p := res.Drift.Features[0], res.Drift.Features[1], res.Drift.Prediction
	if len(x.BinEdges) < 2 || x.BinEdges[0] != 1 || x.BinEdges[len(x.BinEdges)-1] != math.Nextafter(3, 4) {
		t.Errorf("x edges %v", x.BinEdges)
	}
	if y.Counts[0] != 1 || y.Counts[len(y.Counts)-1] != 1 { // -Inf under, +Inf over
		t.Errorf("y counts %v over %v", y.Counts, y.BinEdges)
	}
	if strings.Join(p.Categories, ",") != "0.25,0.5" || p.Counts[0] != 1 || p.Counts[1] != 3 || p.Counts[2] != 0 {
		t.Errorf("prediction %v", p)
	}
}
