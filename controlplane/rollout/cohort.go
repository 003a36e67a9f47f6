package rollout

import (
	"sort"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// Figures are a cohort's measures over a window of summaries: what the
// gates compare.
type Figures struct {
	// Devices is how many devices of the cohort sent a summary in the
	// window; Members how many the cohort has.
	Devices  int    `json:"devices"`
	Members  int    `json:"members"`
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
	// P95Ms is the merged latency sketch's 95th percentile (HasP95 false
	// when the cohort served nothing).
	P95Ms               float64 `json:"p95_ms"`
	HasP95              bool    `json:"has_p95"`
	Rollbacks           uint64  `json:"rollbacks"` // the lifecycle's counters in the window
	ShadowCompared      uint64  `json:"shadow_compared"`
	ShadowDisagreements uint64  `json:"shadow_disagreements"`
	// Drift: the worst feature's or prediction's scores of the merged
	// summary against the release's baseline; DriftJudged false when the
	// merge held fewer records than the bundle's minimum or no baseline
	// was known.
	JS          float64 `json:"js"`
	PSI         float64 `json:"psi"`
	KS          float64 `json:"ks"`
	DriftJudged bool    `json:"drift_judged"`
	AtMs        int64   `json:"at_ms,omitempty"`
}

// ErrorRate is errors over requests (0 without requests).
func (f Figures) ErrorRate() float64 {
	if f.Requests == 0 {
		return 0
	}
	return float64(f.Errors) / float64(f.Requests)
}

// DisagreementRate is shadow disagreements over comparisons.
func (f Figures) DisagreementRate() float64 {
	if f.ShadowCompared == 0 {
		return 0
	}
	return float64(f.ShadowDisagreements) / float64(f.ShadowCompared)
}

// deviceSummary is one summary and the device that sent it.
type deviceSummary struct {
	device string
	s      *pb.WindowSummary
}

// cohort is a set of devices and their summaries in the window.
type cohort struct {
	members   int
	summaries []deviceSummary // in device order, then by start
}

// figures measures the cohort. manifests gives the baseline of each
// release for the drift scores (nil entries: not scored); drift says
// whether scores are wanted at all (merging every feature costs).
func (c *cohort) figures(manifests func(release uint64) *pb.BundleManifest, drift bool) Figures {
	f := Figures{Members: c.members}
	seen := map[string]bool{}
	var lat latencyAcc
	byRelease := map[uint64][]*pb.WindowSummary{}
	for _, ds := range c.summaries {
		s := ds.s
		seen[ds.device] = true
		f.Requests += s.GetRequests()
		f.Errors += s.GetErrors()
		f.Rollbacks += s.GetCounters().GetRollbacks()
		f.ShadowCompared += s.GetCounters().GetShadowCompared()
		f.ShadowDisagreements += s.GetCounters().GetShadowDisagreements()
		lat.add(s.GetLatency())
		if drift {
			byRelease[s.GetRelease()] = append(byRelease[s.GetRelease()], s)
		}
	}
	f.Devices = len(seen)
	if l := lat.sketch(); l != nil {
		f.P95Ms, f.HasP95 = summary.Quantile(l, 0.95)
	}
	if !drift {
		return f
	}
	// The drift of each release against its own baseline; a cohort of
	// several releases (the previous-release cohort may be) gets the
	// request-weighted mean of their scores.
	releases := make([]uint64, 0, len(byRelease))
	for r := range byRelease {
		releases = append(releases, r)
	}
	sort.Slice(releases, func(i, j int) bool { return releases[i] < releases[j] })
	var weight float64
	for _, r := range releases {
		m := manifests(r)
		if m.GetDrift() == nil {
			continue
		}
		merged, err := summary.MergeAll(byRelease[r])
		if err != nil {
			continue
		}
		sc := summary.Score(m.GetDrift(), merged, summary.EffectiveThresholds(m.GetDrift().GetThresholds(), nil), summary.MinRecordsOf(m))
		if !sc.GetJudged() {
			continue
		}
		w := float64(merged.GetRequests())
		f.JS += w * sc.GetMaxJs()
		f.PSI += w * sc.GetMaxPsi()
		f.KS += w * sc.GetMaxKs()
		weight += w
	}
	if weight > 0 {
		f.JS /= weight
		f.PSI /= weight
		f.KS /= weight
		f.DriftJudged = true
	}
	return f
}

// latencyAcc adds latency sketches bin by bin, as summary.Merge does, but
// into one growing array: a cohort's thousands of sketches cost no more
// than their bins. Sketches of another accuracy (none in protocol 1) are
// left out.
type latencyAcc struct {
	offset int
	counts []uint64
	zero   uint64
	any    bool
}

func (a *latencyAcc) add(l *pb.LatencySketch) {
	if l == nil {
		return
	}
	if len(l.GetCounts()) > 0 && l.GetRelativeAccuracy() != summary.RelativeAccuracy {
		return
	}
	a.any = true
	a.zero += l.GetZeroCount()
	n := len(l.GetCounts())
	if n == 0 {
		return
	}
	lo := int(l.GetOffset())
	if len(a.counts) == 0 {
		a.offset = lo
	}
	if lo < a.offset {
		grown := make([]uint64, a.offset-lo+len(a.counts))
		copy(grown[a.offset-lo:], a.counts)
		a.counts, a.offset = grown, lo
	}
	if need := lo - a.offset + n; need > len(a.counts) {
		a.counts = append(a.counts, make([]uint64, need-len(a.counts))...)
	}
	for i, c := range l.GetCounts() {
		a.counts[lo-a.offset+i] += c
	}
}

func (a *latencyAcc) sketch() *pb.LatencySketch {
	if !a.any || len(a.counts) > pb.MaxSketchBins {
		return nil
	}
	return &pb.LatencySketch{RelativeAccuracy: summary.RelativeAccuracy, Offset: int32(a.offset), Counts: a.counts, ZeroCount: a.zero}
}
