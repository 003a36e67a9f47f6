package summary

import (
	"math"
	"sort"
	"strconv"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Binner maps a value to its bin on one feature's baseline.
//
// Numeric: n edges make n+1 bins; bin 0 is the underflow (< edges[0],
// -Inf included), bin i is [edges[i-1], edges[i]) and bin n the overflow
// (>= edges[n-1], +Inf included). Categorical: a value is matched by its
// shortest decimal form ("3" for 3.0) against the vocabulary; bin i is
// categories[i] and the last bin anything else. NaN is in no bin.
type Binner struct {
	edges []float64
	cats  map[string]int
	n     int // number of bins
}

// NewBinner returns the binner of a feature baseline.
func NewBinner(f *pb.FeatureBaseline) *Binner {
	b := &Binner{edges: f.GetBinEdges()}
	if cats := f.GetCategories(); len(cats) > 0 {
		b.cats = make(map[string]int, len(cats))
		for i, c := range cats {
			b.cats[c] = i
		}
		b.n = len(cats) + 1
		return b
	}
	b.n = len(b.edges) + 1
	return b
}

// Len is the number of bins, under/overflow or "other" included.
func (b *Binner) Len() int { return b.n }

// Categorical reports whether the feature is categorical.
func (b *Binner) Categorical() bool { return b.cats != nil }

// Bin returns v's bin, or -1 for NaN.
func (b *Binner) Bin(v float64) int {
	if math.IsNaN(v) {
		return -1
	}
	if b.cats != nil {
		if i, ok := b.cats[strconv.FormatFloat(v, 'g', -1, 64)]; ok {
			return i
		}
		return b.n - 1
	}
	// The number of edges <= v is the bin: edges[i-1] <= v < edges[i].
	return sort.Search(len(b.edges), func(i int) bool { return b.edges[i] > v })
}

// QuantileEdges returns bin edges at the q-quantiles (q = 1/bins …
// (bins-1)/bins) of the finite values in xs, with duplicates removed, plus
// the minimum as the first edge (values below the reference range land in
// the underflow bin) and the float just above the maximum as the last
// (values above it land in the overflow bin). A constant feature c gets the
// edges [c, c⁺]: underflow, the constant, overflow. It returns nil when xs
// has no finite value.
func QuantileEdges(xs []float64, bins int) []float64 {
	v := make([]float64, 0, len(xs))
	for _, x := range xs {
		if !math.IsNaN(x) && !math.IsInf(x, 0) {
			v = append(v, x)
		}
	}
	if len(v) == 0 {
		return nil
	}
	sort.Float64s(v)
	edges := []float64{v[0]}
	for i := 1; i < bins; i++ {
		// The lower value at the quantile (numpy's "lower" method), so edges
		// are values that occur in the data.
		e := v[int(float64(i)*float64(len(v)-1)/float64(bins))]
		if e > edges[len(edges)-1] {
			edges = append(edges, e)
		}
	}
	// The float just above the maximum closes the last regular bin: values
	// above the reference range go to overflow.
	edges = append(edges, math.Nextafter(v[len(v)-1], math.Inf(1)))
	return edges
}

// Histogram returns the counts of xs over the binner's bins; NaN values are
// counted in no bin.
func (b *Binner) Histogram(xs []float64) []uint64 {
	h := make([]uint64, b.n)
	for _, x := range xs {
		if i := b.Bin(x); i >= 0 {
			h[i]++
		}
	}
	return h
}
