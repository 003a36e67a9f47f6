package summary

import "math"

// PSIEpsilon replaces an empty bin's proportion in PSI, whose terms
// (a−e)·ln(a/e) are undefined when a bin is empty on either side: each
// proportion is max(p, PSIEpsilon), without renormalising. 1e-4 is the
// usual choice; it caps one empty bin's term near (p)·ln(p/1e-4).
const PSIEpsilon = 1e-4

// proportions normalises counts; ok is false when they sum to zero.
func proportions(c []float64) ([]float64, bool) {
	var n float64
	for _, v := range c {
		n += v
	}
	if !(n > 0) {
		return nil, false
	}
	p := make([]float64, len(c))
	for i, v := range c {
		p[i] = v / n
	}
	return p, true
}

// JSDistance is the Jensen-Shannon distance between the distributions
// proportional to p and q: sqrt((KL(p‖m) + KL(q‖m)) / 2) with m = (p+q)/2,
// logarithms in the given base (2 gives 0..1; 0 means e), as SciPy's
// scipy.spatial.distance.jensenshannon. ok is false when p or q is empty
// (sums to zero) or their lengths differ.
func JSDistance(p, q []float64, base float64) (float64, bool) {
	if len(p) != len(q) {
		return 0, false
	}
	pp, ok1 := proportions(p)
	qq, ok2 := proportions(q)
	if !ok1 || !ok2 {
		return 0, false
	}
	var js float64
	for i := range pp {
		m := (pp[i] + qq[i]) / 2
		if pp[i] > 0 {
			js += pp[i] * math.Log(pp[i]/m)
		}
		if qq[i] > 0 {
			js += qq[i] * math.Log(qq[i]/m)
		}
	}
	js /= 2
	if base > 0 {
		js /= math.Log(base)
	}
	return math.Sqrt(max(js, 0)), true
}

// PSI is the population stability index of actual against expected:
// Σ (a_i − e_i)·ln(a_i/e_i) over proportions, each floored at PSIEpsilon.
// ok is false when either side is empty or their lengths differ.
func PSI(expected, actual []float64) (float64, bool) {
	if len(expected) != len(actual) {
		return 0, false
	}
	e, ok1 := proportions(expected)
	a, ok2 := proportions(actual)
	if !ok1 || !ok2 {
		return 0, false
	}
	var psi float64
	for i := range e {
		ei, ai := max(e[i], PSIEpsilon), max(a[i], PSIEpsilon)
		psi += (ai - ei) * math.Log(ai/ei)
	}
	return psi, true
}

// KS is the two-sample Kolmogorov-Smirnov statistic over binned CDFs: the
// largest absolute difference of the cumulative proportions at any bin
// boundary. It equals SciPy's ks_2samp statistic when every distinct value
// has a bin of its own, and is at most that otherwise. ok is false when
// either side is empty or their lengths differ.
func KS(p, q []float64) (float64, bool) {
	if len(p) != len(q) {
		return 0, false
	}
	pp, ok1 := proportions(p)
	qq, ok2 := proportions(q)
	if !ok1 || !ok2 {
		return 0, false
	}
	var cp, cq, d float64
	for i := range pp {
		cp += pp[i]
		cq += qq[i]
		d = max(d, math.Abs(cp-cq))
	}
	return d, true
}

// floats converts counts for the score functions.
func floats(c []uint64) []float64 {
	f := make([]float64, len(c))
	for i, v := range c {
		f[i] = float64(v)
	}
	return f
}
