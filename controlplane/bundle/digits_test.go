package bundle_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

var update = flag.Bool("update", false, "regenerate testdata/digits from /work/shared/models/digits")

// sharedDigits is where the shared digits model and data live.
const sharedDigits = "/work/shared/models/digits"

// goldenRows is how many rows of test.csv make the golden check.
const goldenRows = 4

// TestDigitsTestdata regenerates testdata/digits/golden and drift.json from
// the shared data set: the first goldenRows rows of test.csv and
// test_expected.csv, and per-pixel histograms of train.csv (bins of 1/8,
// the pixels being multiples of 1/16 in [0, 1]) with the label
// distribution as the prediction baseline.
func TestDigitsTestdata(t *testing.T) {
	if !*update {
		t.Skip("regenerates testdata with -update")
	}
	dir := filepath.Join("testdata", "digits")
	test := readCSV(t, filepath.Join(sharedDigits, "test.csv"), true)
	expected := readCSV(t, filepath.Join(sharedDigits, "test_expected.csv"), false)
	var px, prob [][]float64
	for i := range goldenRows {
		px = append(px, test[i][:64])
		prob = append(prob, expected[i])
	}
	writeJSON(t, filepath.Join(dir, "golden", "pixels.json"), px)
	writeJSON(t, filepath.Join(dir, "golden", "probabilities.json"), prob)

	edges := []float64{0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875}
	base := &pb.DriftBaseline{Prediction: &pb.FeatureBaseline{Name: "class", Tensor: "probabilities",
		Categories: []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, Counts: make([]uint64, 11)}}
	for i := range 64 {
		base.Features = append(base.Features, &pb.FeatureBaseline{Name: "p" + strconv.Itoa(i), Tensor: "pixels",
			Index: uint32(i), BinEdges: edges, Counts: make([]uint64, len(edges)+1)})
	}
	for _, row := range readCSV(t, filepath.Join(sharedDigits, "train.csv"), true) {
		for i, f := range base.Features {
			b := 0
			for b < len(edges) && row[i] >= edges[b] {
				b++
			}
			f.Counts[b]++
		}
		base.Prediction.Counts[int(row[64])]++
	}
	raw, err := protojson.Marshal(base)
	if err != nil {
		t.Fatal(err)
	}
	var compact, out bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil { // protojson's spacing is unstable
		t.Fatal(err)
	}
	if err := json.Indent(&out, compact.Bytes(), "", " "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "drift.json"), append(out.Bytes(), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readCSV(t *testing.T, path string, header bool) [][]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if header {
		recs = recs[1:]
	}
	out := make([][]float64, len(recs))
	for i, r := range recs {
		for _, s := range r {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("%s row %d: %v", path, i, err)
			}
			out[i] = append(out[i], v)
		}
	}
	return out
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
