#!/usr/bin/python3
"""Reference drift scores for proto/summary's tests, computed once with
Debian's python3-scipy (apt-get install python3-scipy) and committed as
scores.json; the Go tests read the JSON and need no Python.

Each case has bin edges (given, or the lower quantiles of the reference with
duplicates removed, as summary.QuantileEdges makes them), reference and
current values (NaN and ±Inf written as strings), the histograms over the
edges with underflow and overflow bins (NaN in no bin, -Inf underflow, +Inf
overflow), and the scores:
  js  scipy.spatial.distance.jensenshannon(ref_hist, cur_hist, base=2)
  psi sum((a-e)*ln(a/e)) over proportions floored at 1e-4
  ks  max |CDF_ref - CDF_cur| over the bins' cumulative proportions
  ks_2samp  scipy.stats.ks_2samp(ref, cur).statistic on the finite values,
            given where every distinct value has its own bin (then ks equals it)
A score is null where a histogram is empty.

Run: /usr/bin/python3 make_fixture.py > scores.json
"""
import json
import math

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp

EPS = 1e-4


def quantile_edges(xs, bins):
    v = np.sort(np.array([x for x in xs if math.isfinite(x)], dtype=float))
    if len(v) == 0:
        return []
    edges = [v[0]]
    for i in range(1, bins):
        e = v[int(i * (len(v) - 1) / bins)]
        if e > edges[-1]:
            edges.append(float(e))
    edges.append(float(np.nextafter(v[-1], np.inf)))
    return [float(e) for e in edges]


def hist(xs, edges):
    h = [0] * (len(edges) + 1)
    for x in xs:
        if math.isnan(x):
            continue
        h[int(np.searchsorted(edges, x, side="right"))] += 1
    return h


def psi(e, a):
    e = np.array(e, float); a = np.array(a, float)
    if e.sum() == 0 or a.sum() == 0:
        return None
    e = np.maximum(e / e.sum(), EPS); a = np.maximum(a / a.sum(), EPS)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_binned(p, q):
    p = np.array(p, float); q = np.array(q, float)
    if p.sum() == 0 or q.sum() == 0:
        return None
    return float(np.max(np.abs(np.cumsum(p / p.sum()) - np.cumsum(q / q.sum()))))


def js(p, q):
    if sum(p) == 0 or sum(q) == 0:
        return None
    return float(jensenshannon(p, q, base=2))


def enc(xs):
    out = []
    for x in xs:
        if math.isnan(x):
            out.append("nan")
        elif math.isinf(x):
            out.append("inf" if x > 0 else "-inf")
        else:
            out.append(float(x))
    return out


rng = np.random.default_rng(20240601)
cases = []


def case(name, ref, cur, edges=None, bins=10, exact_ks=False):
    ref = [float(x) for x in ref]; cur = [float(x) for x in cur]
    if edges is None:
        edges = quantile_edges(ref, bins)
    hr, hc = hist(ref, edges), hist(cur, edges)
    c = {"name": name, "edges": edges, "ref": enc(ref), "cur": enc(cur),
         "ref_hist": hr, "cur_hist": hc,
         "js": js(hr, hc), "psi": psi(hr, hc), "ks": ks_binned(hr, hc)}
    if exact_ks:
        fr = [x for x in ref if math.isfinite(x)]; fc = [x for x in cur if math.isfinite(x)]
        c["ks_2samp"] = float(ks_2samp(fr, fc).statistic)
    cases.append(c)


normal = rng.normal(0, 1, 400)
case("same normal", normal, rng.normal(0, 1, 300))
case("shifted normal", normal, rng.normal(0.5, 1, 300))
case("scaled normal", normal, rng.normal(0, 2, 300))
case("empty bins in current", normal, rng.normal(-1.5, 0.1, 50))
case("tiny window", normal, [0.1, 2.5, -0.3])
case("empty window", normal, [])
case("all NaN window", normal, [math.nan] * 5)
case("constant feature", [0.0] * 200, [0.0] * 40 + [0.0625] * 10)
case("constant feature unchanged", [0.0] * 200, [0.0] * 30)
case("NaN and infinities", normal, list(rng.normal(0, 1, 100)) + [math.nan] * 7 + [math.inf] * 5 + [-math.inf] * 3)
case("all above reference range", normal, rng.uniform(10, 20, 60))
case("all below reference range", normal, rng.uniform(-20, -10, 60))
case("digits-like discrete", rng.integers(0, 17, 500) / 16, rng.integers(4, 17, 200) / 16)
case("uniform vs skewed", rng.uniform(0, 1, 500), rng.beta(2, 5, 300), bins=20)
case("ks exact on distinct values", [1.0, 2.0, 3.0], [1.01, 2.01],
     edges=[1.0, 1.01, 2.0, 2.01, 3.0, 3.0000000000000004], exact_ks=True)
case("ks exact interleaved", [0.5, 1.5, 2.5, 3.5], [1.0, 2.0, 3.0, 4.0, 5.0],
     edges=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 5.000000000000001], exact_ks=True)

# Histogram-only pairs: SciPy's own test values and PSI's textbook case.
pairs = [
    {"name": "scipy jensenshannon([1,0],[.5,.5]) base e", "p": [1, 0], "q": [0.5, 0.5], "base": 0,
     "js": float(jensenshannon([1.0, 0.0], [0.5, 0.5]))},
    {"name": "scipy jensenshannon([1,0,0],[0,1,0]) base 2", "p": [1, 0, 0], "q": [0, 1, 0], "base": 2,
     "js": float(jensenshannon([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], base=2))},
    {"name": "scipy jensenshannon([1,2,3],[4,5,6]) base 2", "p": [1, 2, 3], "q": [4, 5, 6], "base": 2,
     "js": float(jensenshannon([1.0, 2.0, 3.0], [4.0, 5.0, 6.0], base=2))},
    {"name": "psi uniform 4 vs .1 .2 .3 .4", "p": [0.25, 0.25, 0.25, 0.25], "q": [0.1, 0.2, 0.3, 0.4], "base": 2,
     "js": float(jensenshannon([0.25] * 4, [0.1, 0.2, 0.3, 0.4], base=2)),
     "psi": psi([0.25] * 4, [0.1, 0.2, 0.3, 0.4])},
]
print(json.dumps({"scipy": __import__("scipy").__version__, "numpy": np.__version__,
                  "cases": cases, "pairs": pairs}, indent=1))
