package summary

import (
	"encoding/json"
	"math"
	"os"
	"testing"
)

type fixture struct {
	Cases []struct {
		Name             string
		Edges            []float64
		Ref, Cur         []any
		RefHist, CurHist []uint64 `json:"-"`
		RefHistJ         []uint64 `json:"ref_hist"`
		CurHistJ         []uint64 `json:"cur_hist"`
		JS, PSI, KS      *float64
		KS2Samp          *float64 `json:"ks_2samp"`
	}
	Pairs []struct {
		Name    string
		P, Q    []float64
		Base    float64
		JS, PSI *float64
	}
}

func loadFixture(t *testing.T) fixture {
	t.Helper()
	b, err := os.ReadFile("testdata/scores.json")
	if err != nil {
		t.Fatal(err)
	}
	var f fixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Cases) < 10 || len(f.Pairs) < 4 {
		t.Fatalf("fixture has %d cases and %d pairs", len(f.Cases), len(f.Pairs))
	}
	return f
}

func decodeValues(t *testing.T, vs []any) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		switch v := v.(type) {
		case float64:
			out[i] = v
		case string:
			switch v {
			case "nan":
				out[i] = math.NaN()
			case "inf":
				out[i] = math.Inf(1)
			case "-inf":
				out[i] = math.Inf(-1)
			default:
				t.Fatalf("bad value %q", v)
			}
		}
	}
	return out
}

const tol = 1e-12

func near(a, b float64) bool { return math.Abs(a-b) <= tol*max(1, math.Abs(b)) }

// TestScoresAgainstSciPy compares binning and every score with the values
// testdata/make_fixture.py computed with SciPy 1.10.
func TestScoresAgainstSciPy(t *testing.T) {
	f := loadFixture(t)
	for _, c := range f.Cases {
		t.Run(c.Name, func(t *testing.T) {
			ref, cur := decodeValues(t, c.Ref), decodeValues(t, c.Cur)
			if c.Name != "ks exact on distinct values" && c.Name != "ks exact interleaved" {
				if got := QuantileEdges(ref, 10+10*boolInt(c.Name == "uniform vs skewed")); !equalFloats(got, c.Edges) {
					t.Fatalf("edges %v, want %v", got, c.Edges)
				}
			}
			b := &Binner{edges: c.Edges, n: len(c.Edges) + 1}
			hr, hc := b.Histogram(ref), b.Histogram(cur)
			if !equalUints(hr, c.RefHistJ) || !equalUints(hc, c.CurHistJ) {
				t.Fatalf("histograms %v %v, want %v %v", hr, hc, c.RefHistJ, c.CurHistJ)
			}
			check := func(name string, got float64, ok bool, want *float64) {
				t.Helper()
				if want == nil {
					if ok {
						t.Errorf("%s = %v, want undefined", name, got)
					}
					return
				}
				if !ok || !near(got, *want) {
					t.Errorf("%s = %v (ok %v), want %v", name, got, ok, *want)
				}
			}
			js, ok := JSDistance(floats(hr), floats(hc), 2)
			check("js", js, ok, c.JS)
			psi, ok := PSI(floats(hr), floats(hc))
			check("psi", psi, ok, c.PSI)
			ks, ok := KS(floats(hr), floats(hc))
			check("ks", ks, ok, c.KS)
			if c.KS2Samp != nil && !near(ks, *c.KS2Samp) {
				t.Errorf("binned ks %v, ks_2samp %v", ks, *c.KS2Samp)
			}
		})
	}
	for _, p := range f.Pairs {
		t.Run(p.Name, func(t *testing.T) {
			if js, ok := JSDistance(p.P, p.Q, p.Base); !ok || !near(js, *p.JS) {
				t.Errorf("js = %v, want %v", js, *p.JS)
			}
			if p.PSI != nil {
				if psi, ok := PSI(p.P, p.Q); !ok || math.Abs(psi-*p.PSI) > 1e-12 {
					t.Errorf("psi = %v, want %v", psi, *p.PSI)
				}
			}
		})
	}
}

// TestPublishedValues pins the values the issue quotes from SciPy's own
// tests and the PSI textbook example.
func TestPublishedValues(t *testing.T) {
	if v, _ := JSDistance([]float64{1, 0}, []float64{.5, .5}, 0); v != 0.46450140402245893 {
		t.Errorf("jensenshannon([1,0],[.5,.5]) = %v", v)
	}
	if v, _ := JSDistance([]float64{1, 0, 0}, []float64{0, 1, 0}, 2); v != 1.0 {
		t.Errorf("jensenshannon([1,0,0],[0,1,0], base=2) = %v", v)
	}
	b := &Binner{edges: []float64{1, 1.01, 2, 2.01, 3, math.Nextafter(3, 4)}, n: 7}
	if v, _ := KS(floats(b.Histogram([]float64{1.01, 2.01})), floats(b.Histogram([]float64{1, 2, 3}))); math.Abs(v-1.0/3) > 1e-15 {
		t.Errorf("ks([1.01,2.01],[1,2,3]) = %v, want 1/3", v)
	}
	if v, _ := PSI([]float64{1, 1, 1, 1}, []float64{.1, .2, .3, .4}); math.Abs(v-0.228217) > 5e-7 {
		t.Errorf("psi = %v, want 0.228217", v)
	}
	for _, f := range []func([]float64, []float64) (float64, bool){PSI, KS} {
		if _, ok := f([]float64{1, 2}, []float64{0, 0}); ok {
			t.Error("a score of an empty window is defined")
		}
		if _, ok := f([]float64{1, 2}, []float64{1}); ok {
			t.Error("a score of mismatched bins is defined")
		}
	}
}

func TestQuantileEdges(t *testing.T) {
	if e := QuantileEdges([]float64{math.NaN(), math.Inf(1)}, 10); e != nil {
		t.Errorf("edges of no finite value: %v", e)
	}
	e := QuantileEdges([]float64{0, 0, 0, 0, 0, 0, 0, 0.5, 1}, 9)
	if !equalFloats(e, []float64{0, 0.5, math.Nextafter(1, 2)}) {
		t.Errorf("edges %v", e)
	}
	b := NewBinner(featureBaseline("f", e))
	for v, want := range map[float64]int{-1: 0, 0: 1, 0.25: 1, 0.5: 2, 1: 2, 1.5: 3} {
		if got := b.Bin(v); got != want {
			t.Errorf("bin(%v) = %d, want %d", v, got, want)
		}
	}
	if b.Bin(math.Inf(-1)) != 0 || b.Bin(math.Inf(1)) != 3 || b.Bin(math.NaN()) != -1 {
		t.Error("±Inf not in under/overflow or NaN in a bin")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func equalFloats(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalUints(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
