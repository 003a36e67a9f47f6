package summary

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func featureBaseline(name string, edges []float64) *pb.FeatureBaseline {
	return &pb.FeatureBaseline{Name: name, BinEdges: edges, Counts: make([]uint64, len(edges)+1)}
}

// testBaseline has a numeric feature with NaN/Inf-prone values, a constant
// feature and a categorical prediction.
func testBaseline() *pb.DriftBaseline {
	return &pb.DriftBaseline{
		Features: []*pb.FeatureBaseline{
			featureBaseline("x", []float64{-1, 0, 0.5, 1, 2}),
			featureBaseline("const", []float64{0, math.Nextafter(0, 1)}),
		},
		Prediction: &pb.FeatureBaseline{Name: "class", Categories: []string{"0", "1", "2"}, Counts: make([]uint64, 4)},
	}
}

func randomRecords(r *rand.Rand, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		x := r.NormFloat64()
		switch r.IntN(40) {
		case 0:
			x = math.NaN()
		case 1:
			x = math.Inf(1)
		case 2:
			x = math.Inf(-1)
		}
		rec := Record{LatencyMs: r.ExpFloat64() * 5, OK: r.IntN(20) != 0, Features: []float64{x, 0},
			Prediction: float64(r.IntN(5)), HasPrediction: r.IntN(10) != 0}
		if r.IntN(15) == 0 {
			rec.Features = rec.Features[:1] // "const" missing
		}
		if r.IntN(30) == 0 {
			rec.LatencyMs = 0
		}
		recs[i] = rec
	}
	return recs
}

func summarise(b *pb.DriftBaseline, start, end int64, recs []Record) *pb.WindowSummary {
	w := NewWindow(Meta{Model: "m", Release: 3, Slot: "a"}, b, start)
	for _, r := range recs {
		w.Add(r)
	}
	w.AddCounters(&pb.ModelCounters{Errors: uint64(len(recs) % 3), Crashes: 1, ShadowCompared: 4, ShadowDisagreements: 1})
	return w.Summary(end)
}

// TestMergeProperty: merge(summarise(A), summarise(B)) equals
// summarise(A ∪ B): counts, bins, counters and the sketch exactly; the
// moments and the sketch's sum within floating-point tolerance.
func TestMergeProperty(t *testing.T) {
	b := testBaseline()
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 7))
		na, nb := r.IntN(200), r.IntN(200)
		all := randomRecords(r, na+nb)
		a := summarise(b, 1000, 2000, all[:na])
		bb := summarise(b, 2000, 3000, all[na:])
		got, err := Merge(a, bb)
		if err != nil {
			t.Fatal(err)
		}
		want := summarise(b, 1000, 3000, all)
		want.Windows = 2
		want.Counters.Errors = a.Counters.Errors + bb.Counters.Errors
		want.Counters.Crashes, want.Counters.ShadowCompared, want.Counters.ShadowDisagreements = 2, 8, 2
		assertSummaryEqual(t, got, want)
	}
}

func assertSummaryEqual(t *testing.T, got, want *pb.WindowSummary) {
	t.Helper()
	const rel = 1e-9
	closeTo := func(a, b float64) bool { return math.Abs(a-b) <= rel*max(1, math.Abs(b)) }
	exact := func(s *pb.WindowSummary) *pb.WindowSummary {
		c := proto.Clone(s).(*pb.WindowSummary)
		c.Latency.Sum = 0
		for _, f := range append(c.Features, c.Prediction) {
			f.Mean, f.M2 = 0, 0
		}
		return c
	}
	if !proto.Equal(exact(got), exact(want)) {
		t.Fatalf("merged summary differs:\n got %v\nwant %v", exact(got), exact(want))
	}
	if !closeTo(got.Latency.Sum, want.Latency.Sum) {
		t.Errorf("latency sum %v, want %v", got.Latency.Sum, want.Latency.Sum)
	}
	for i, f := range append(got.Features, got.Prediction) {
		w := append(want.Features, want.Prediction)[i]
		if !closeTo(f.Mean, w.Mean) || !closeTo(f.M2, w.M2) {
			t.Errorf("%s: mean %v m2 %v, want %v %v", f.Name, f.Mean, f.M2, w.Mean, w.M2)
		}
	}
}

func TestWindowCounts(t *testing.T) {
	b := testBaseline()
	w := NewWindow(Meta{Model: "m"}, b, 1)
	for _, r := range []Record{
		{LatencyMs: 2, OK: true, Features: []float64{0.7, 0}, Prediction: 1, HasPrediction: true},
		{LatencyMs: 4, OK: true, Features: []float64{math.NaN(), 0}, Prediction: 9, HasPrediction: true},
		{LatencyMs: 6, OK: true, Features: []float64{math.Inf(1)}, Missing: nil},
		{LatencyMs: 8, OK: true, Features: []float64{-5, 1}, Missing: []bool{false, true}},
		{LatencyMs: 100, OK: false, Features: []float64{0.7, 0}},
		{LatencyMs: 6, OK: true, Unsampled: true}, // features neither seen nor missing
	} {
		w.Add(r)
	}
	s := w.Summary(2)
	x, c, p := s.Features[0], s.Features[1], s.Prediction
	if s.Requests != 6 || s.Errors != 1 || SketchCount(s.Latency) != 6 {
		t.Fatalf("requests %d errors %d sketch %d", s.Requests, s.Errors, SketchCount(s.Latency))
	}
	if x.Count != 2 || x.Nan != 1 || x.PosInf != 1 || x.Min != -5 || x.Max != 0.7 || math.Abs(x.Mean+2.15) > 1e-12 {
		t.Errorf("x: %v", x)
	}
	if !equalUints(x.Bins, []uint64{1, 0, 0, 1, 0, 1}) {
		t.Errorf("x bins %v", x.Bins)
	}
	if c.Count != 2 || c.Missing != 2 || !equalUints(c.Bins, []uint64{0, 2, 0}) {
		t.Errorf("const: %v", c)
	}
	if p.Count != 2 || p.Missing != 3 || !equalUints(p.Bins, []uint64{0, 1, 0, 1}) {
		t.Errorf("prediction: %v", p)
	}
	if v, ok := Variance(x); !ok || math.Abs(v-16.245) > 1e-9 {
		t.Errorf("variance %v", v)
	}
	if q, ok := Quantile(s.Latency, 0.5); !ok || math.Abs(q-6) > 6*RelativeAccuracy {
		t.Errorf("median latency %v, want 6 ±1%%", q)
	}
}

func TestMergeMismatch(t *testing.T) {
	b := testBaseline()
	a := summarise(b, 1, 2, []Record{{LatencyMs: 1, OK: true}})
	for name, mod := range map[string]func(s *pb.WindowSummary){
		"model":    func(s *pb.WindowSummary) { s.Model = "other" },
		"release":  func(s *pb.WindowSummary) { s.Release++ },
		"bins":     func(s *pb.WindowSummary) { s.Features[0].Bins = s.Features[0].Bins[1:] },
		"features": func(s *pb.WindowSummary) { s.Features = s.Features[:1] },
		"name":     func(s *pb.WindowSummary) { s.Features[1].Name = "y" },
		"accuracy": func(s *pb.WindowSummary) { s.Latency = &pb.LatencySketch{RelativeAccuracy: 0.02, Counts: []uint64{1}} },
		"span": func(s *pb.WindowSummary) {
			s.Latency = &pb.LatencySketch{RelativeAccuracy: RelativeAccuracy, Offset: 60000, Counts: []uint64{1}}
		},
	} {
		c := summarise(b, 1, 2, []Record{{LatencyMs: 1, OK: true}})
		mod(c)
		before := proto.Clone(a)
		if _, err := Merge(a, c); !errors.Is(err, ErrMismatch) {
			t.Errorf("%s: merge gave %v, want ErrMismatch", name, err)
		}
		if !proto.Equal(before, a) {
			t.Errorf("%s: merge modified its input", name)
		}
	}
}

func TestScoreAndThresholds(t *testing.T) {
	b := testBaseline()
	b.Features[0].Counts = []uint64{5, 10, 20, 20, 10, 5}
	b.Features[1].Counts = []uint64{0, 70, 0}
	b.Prediction.Counts = []uint64{30, 30, 10, 0}
	r := rand.New(rand.NewPCG(1, 2))
	s := summarise(b, 0, 1, randomRecords(r, 300))
	th := EffectiveThresholds(&pb.DriftThresholds{Js: 0.9}, &pb.DriftThresholds{Js: 0.95, Psi: 30})
	if th != (Thresholds{JS: 0.9, PSI: 30, PSIWarn: DefaultPSIWarn, KS: DefaultKS}) {
		t.Fatalf("thresholds %+v", th)
	}
	sc := Score(b, s, Thresholds{JS: 1, PSI: 100, KS: 1}, 301)
	if sc.Judged || sc.Alert || len(sc.Features) != 2 || sc.Prediction == nil {
		t.Fatalf("under the minimum: %v", sc)
	}
	sc = Score(b, s, Thresholds{JS: 1, PSI: 100, PSIWarn: 100, KS: 1}, 300)
	if !sc.Judged || sc.Alert || sc.Warn {
		t.Fatalf("loose thresholds: %v", sc)
	}
	sc = Score(b, s, Thresholds{JS: 0.05, PSI: 100, PSIWarn: 100, KS: 1}, 300)
	if !sc.Alert || sc.MaxJs <= 0.05 || sc.Features[1].Js != 0 {
		t.Fatalf("tight js: %v", sc)
	}
	v := Variability([]*pb.DriftScores{{MaxJs: 0.1}, {MaxJs: 0.2}, {MaxJs: 0.3}})
	if math.Abs(v.GetJs()-(0.2+3*0.1)) > 1e-12 {
		t.Errorf("variability js %v, want 0.5", v.GetJs())
	}
	if Variability([]*pb.DriftScores{{}}) != nil {
		t.Error("variability of one window")
	}
	if MinRecords(map[string]string{MinRecordsAnnotation: "250"}) != 250 || MinRecords(nil) != DefaultMinRecords ||
		MinRecords(map[string]string{MinRecordsAnnotation: "-3"}) != DefaultMinRecords {
		t.Error("MinRecords")
	}
	ann := map[string]string{MinRecordsAnnotation: "250"}
	for _, c := range []struct {
		m    *pb.BundleManifest
		want uint64
	}{
		{&pb.BundleManifest{Drift: &pb.DriftBaseline{MinWindowRecords: 40}, Annotations: ann}, 40}, // the field wins
		{&pb.BundleManifest{Drift: &pb.DriftBaseline{}, Annotations: ann}, 250},                    // an older bundle
		{&pb.BundleManifest{Drift: &pb.DriftBaseline{}}, DefaultMinRecords},
		{nil, DefaultMinRecords},
	} {
		if got := MinRecordsOf(c.m); got != c.want {
			t.Errorf("MinRecordsOf(%v) = %d, want %d", c.m, got, c.want)
		}
	}
}
