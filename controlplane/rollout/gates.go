package rollout

import (
	"fmt"
	"sort"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/summary"
)

// GateStatus is a gate's verdict.
type GateStatus string

// Verdicts. Insufficient (too few devices reporting, too few requests, no
// previous-release figures to compare with) never lets a stage advance and
// never breaches.
const (
	GatePass         GateStatus = "pass"
	GateBreach       GateStatus = "breach"
	GateInsufficient GateStatus = "insufficient"
)

// Gate names, as in the spec and in evaluations.
const (
	GateReporting          = "devices_reporting"
	GateErrorRate          = "error_rate"
	GateLatencyP95         = "latency_p95"
	GateRollbacks          = "rollbacks"
	GateShadowDisagreement = "shadow_disagreement"
	GateDrift              = "drift"
)

// Evaluation is one gate's verdict with the figures it was reached on.
type Evaluation struct {
	Gate   string     `json:"gate"`
	Status GateStatus `json:"status"`
	// Value is the rollout cohort's (on the new release); Baseline the
	// previous release's, when HasBaseline.
	Value       float64 `json:"value"`
	Baseline    float64 `json:"baseline,omitempty"`
	HasBaseline bool    `json:"has_baseline,omitempty"`
	// Limit says what the gate demands; Detail what was found.
	Limit  string `json:"limit"`
	Detail string `json:"detail"`
	// The window of summaries judged: window starts in [FromMs, ToMs).
	FromMs int64 `json:"from_ms"`
	ToMs   int64 `json:"to_ms"`
	// Evidence names the device summaries (or devices) behind a breach,
	// worst first.
	Evidence []Evidence `json:"evidence,omitempty"`
}

// Evidence is one device's summary (StartMs ≠ 0) or state that a breach
// rests on.
type Evidence struct {
	Device  string  `json:"device"`
	Release uint64  `json:"release,omitempty"`
	StartMs int64   `json:"start_ms,omitempty"`
	EndMs   int64   `json:"end_ms,omitempty"`
	Value   float64 `json:"value"`
	Note    string  `json:"note,omitempty"`
}

// String is the evaluation in one line, for audit entries and logs.
func (e Evaluation) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %s", e.Gate, e.Status, e.Detail)
	if e.Limit != "" {
		fmt.Fprintf(&b, " (limit %s)", e.Limit)
	}
	for i, ev := range e.Evidence {
		if i == 0 {
			b.WriteString("; evidence:")
		}
		if ev.StartMs != 0 {
			fmt.Fprintf(&b, " %s release %d window [%d, %d) = %.4g", ev.Device, ev.Release, ev.StartMs, ev.EndMs, ev.Value)
		} else {
			fmt.Fprintf(&b, " %s (%s)", ev.Device, ev.Note)
		}
	}
	return b.String()
}

// maxEvidence bounds the evidence kept per breach.
const maxEvidence = 5

// check is one limit of a gate: breached when value > limit.
type check struct {
	name     string // e.g. "max", "max_increase"
	limit    float64
	value    float64
	relative bool // needs the previous release's figures
}

// verdict combines a gate's checks: a breach when any check that could be
// made breached; otherwise insufficient when one could not be made.
func verdict(e *Evaluation, checks []check, ok, baseOK bool, why string) {
	var limits, found []string
	breach, missing := false, !ok
	for _, c := range checks {
		limits = append(limits, fmt.Sprintf("%s %.4g", c.name, c.limit))
		if !ok || c.relative && !baseOK {
			missing = true
			continue
		}
		if c.value > c.limit {
			breach = true
			found = append(found, fmt.Sprintf("%s %.4g > %.4g", c.name, c.value, c.limit))
		}
	}
	e.Limit = strings.Join(limits, ", ")
	switch {
	case breach:
		e.Status = GateBreach
		e.Detail = strings.Join(found, "; ")
	case missing:
		e.Status = GateInsufficient
		e.Detail = why
	default:
		e.Status = GatePass
	}
	if e.Detail == "" {
		e.Detail = fmt.Sprintf("%.4g", e.Value)
		if e.HasBaseline {
			e.Detail += fmt.Sprintf(" (previous release %.4g)", e.Baseline)
		}
	}
}

// evaluate judges every gate of g on the rollout cohort (cur) and the
// previous release's (base, usable when baseOK). failed are the cohort's
// devices that rolled back by themselves, with why; switched its size.
func evaluate(g *Gates, cur *cohort, curF, base Figures, baseOK bool, failed []Evidence, switched int, from, to int64) []Evaluation {
	need := max(1, min(g.MinDevicesReporting, cur.members))
	reporting := curF.Devices >= need
	minReq := g.minRequests()
	window := func(e Evaluation) Evaluation {
		e.FromMs, e.ToMs = from, to
		if baseOK {
			e.HasBaseline = true
		}
		return e
	}
	silent := fmt.Sprintf("%d of %d devices reporting, %d needed", curF.Devices, cur.members, need)
	var out []Evaluation

	rep := window(Evaluation{Gate: GateReporting, Value: float64(curF.Devices), Limit: fmt.Sprintf("at least %d", need), HasBaseline: false})
	rep.HasBaseline = false
	rep.Status, rep.Detail = GatePass, fmt.Sprintf("%d of %d devices reporting", curF.Devices, cur.members)
	if !reporting {
		rep.Status, rep.Detail = GateInsufficient, silent
	}
	out = append(out, rep)

	enough := reporting && curF.Requests >= minReq
	lowTraffic := silent
	if reporting {
		lowTraffic = fmt.Sprintf("%d requests in the window, %d needed", curF.Requests, minReq)
	}
	baseEnough := baseOK && base.Requests >= minReq
	if r := g.ErrorRate; r != nil {
		e := window(Evaluation{Gate: GateErrorRate, Value: curF.ErrorRate(), Baseline: base.ErrorRate()})
		e.HasBaseline = baseEnough
		var cs []check
		if r.Max != nil {
			cs = append(cs, check{name: "max", limit: *r.Max, value: e.Value})
		}
		if r.MaxIncrease != nil {
			cs = append(cs, check{name: "max_increase", limit: *r.MaxIncrease, value: e.Value - e.Baseline, relative: true})
		}
		verdict(&e, cs, enough, baseEnough, whyMissing(enough, lowTraffic))
		if e.Status == GateBreach {
			e.Evidence = worst(cur, func(d deviceSummary) (float64, bool) {
				if d.s.GetRequests() == 0 {
					return 0, false
				}
				return float64(d.s.GetErrors()) / float64(d.s.GetRequests()), true
			})
		}
		out = append(out, e)
	}
	if l := g.LatencyP95; l != nil {
		ok := enough && curF.HasP95
		bok := baseEnough && base.HasP95
		e := window(Evaluation{Gate: GateLatencyP95, Value: curF.P95Ms, Baseline: base.P95Ms, HasBaseline: bok})
		var cs []check
		if l.MaxMs != nil {
			cs = append(cs, check{name: "max_ms", limit: *l.MaxMs, value: e.Value})
		}
		if l.MaxRatio != nil {
			ratio := 0.0
			if bok && base.P95Ms > 0 {
				ratio = curF.P95Ms / base.P95Ms
			}
			cs = append(cs, check{name: "max_ratio", limit: *l.MaxRatio, value: ratio, relative: true})
			bok = bok && base.P95Ms > 0
		}
		verdict(&e, cs, ok, bok, whyMissing(ok, lowTraffic))
		if e.Status == GateBreach {
			e.Evidence = worst(cur, func(d deviceSummary) (float64, bool) { return summary.Quantile(d.s.GetLatency(), 0.95) })
		}
		out = append(out, e)
	}
	if r := g.Rollbacks; r != nil {
		n := len(failed)
		e := window(Evaluation{Gate: GateRollbacks, Value: float64(n)})
		e.HasBaseline = false
		var cs []check
		if r.Max != nil {
			cs = append(cs, check{name: "max", limit: float64(*r.Max), value: float64(n)})
		}
		if r.MaxRate != nil {
			rate := 0.0
			if switched > 0 {
				rate = float64(n) / float64(switched)
			}
			cs = append(cs, check{name: "max_rate", limit: *r.MaxRate, value: rate})
		}
		// A device's own rollback is a fact, not a sample: it needs no
		// minimum of devices reporting.
		verdict(&e, cs, switched > 0, true, "no device switched yet")
		if e.Status != GateInsufficient {
			what := fmt.Sprintf("%d of %d switched devices rolled back or refused the release", n, switched)
			if e.Status == GateBreach {
				what += ": " + e.Detail
			}
			e.Detail = what
		}
		if e.Status == GateBreach {
			e.Evidence = failed[:min(len(failed), maxEvidence)]
		}
		out = append(out, e)
	}
	if r := g.ShadowDisagreement; r != nil {
		ok := reporting && curF.ShadowCompared >= minReq
		bok := baseOK && base.ShadowCompared >= minReq
		e := window(Evaluation{Gate: GateShadowDisagreement, Value: curF.DisagreementRate(), Baseline: base.DisagreementRate(), HasBaseline: bok})
		var cs []check
		if r.Max != nil {
			cs = append(cs, check{name: "max", limit: *r.Max, value: e.Value})
		}
		if r.MaxIncrease != nil {
			cs = append(cs, check{name: "max_increase", limit: *r.MaxIncrease, value: e.Value - e.Baseline, relative: true})
		}
		why := silent
		if reporting {
			why = fmt.Sprintf("%d shadow comparisons in the window, %d needed", curF.ShadowCompared, minReq)
		}
		verdict(&e, cs, ok, bok, why)
		if e.Status == GateBreach {
			e.Evidence = worst(cur, func(d deviceSummary) (float64, bool) {
				c := d.s.GetCounters()
				if c.GetShadowCompared() == 0 {
					return 0, false
				}
				return float64(c.GetShadowDisagreements()) / float64(c.GetShadowCompared()), true
			})
		}
		out = append(out, e)
	}
	if d := g.Drift; d != nil {
		ok := reporting && curF.DriftJudged
		bok := baseOK && base.DriftJudged
		e := window(Evaluation{Gate: GateDrift, Value: curF.JS, Baseline: base.JS, HasBaseline: bok})
		var cs []check
		if d.MaxJS != nil {
			cs = append(cs, check{name: "max_js", limit: *d.MaxJS, value: curF.JS})
		}
		if d.MaxPSI != nil {
			cs = append(cs, check{name: "max_psi", limit: *d.MaxPSI, value: curF.PSI})
		}
		if d.MaxKS != nil {
			cs = append(cs, check{name: "max_ks", limit: *d.MaxKS, value: curF.KS})
		}
		if d.MaxJSIncrease != nil {
			cs = append(cs, check{name: "max_js_increase", limit: *d.MaxJSIncrease, value: curF.JS - base.JS, relative: true})
		}
		why := silent
		if reporting {
			why = "too few records in the window to judge drift (the bundle's min_window_records)"
		}
		verdict(&e, cs, ok, bok, why)
		if e.Status == GateBreach {
			e.Evidence = worst(cur, func(d deviceSummary) (float64, bool) {
				if sc := d.s.GetScores(); sc != nil {
					return sc.GetMaxJs(), true
				}
				return 0, false
			})
		}
		out = append(out, e)
	}
	return out
}

func whyMissing(enough bool, lowTraffic string) string {
	if !enough {
		return lowTraffic
	}
	return "no figures of the previous release to compare with"
}

// worst returns the cohort's summaries with the highest values, worst
// first (ties: latest first, then by device).
func worst(c *cohort, value func(deviceSummary) (float64, bool)) []Evidence {
	var out []Evidence
	for _, d := range c.summaries {
		if v, ok := value(d); ok {
			out = append(out, Evidence{Device: d.device, Release: d.s.GetRelease(), StartMs: d.s.GetStartMs(), EndMs: d.s.GetEndMs(), Value: v})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Value != out[j].Value {
			return out[i].Value > out[j].Value
		}
		if out[i].StartMs != out[j].StartMs {
			return out[i].StartMs > out[j].StartMs
		}
		return out[i].Device < out[j].Device
	})
	return out[:min(len(out), maxEvidence)]
}
