package lifecycle

import (
	"context"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/agent/modelstats"
)

// Policy is a probation policy (flotilla.v1.ProbationPolicy) with the
// agent's defaults filled in.
type Policy struct {
	Duration            time.Duration
	MaxErrorRate        float64 // 0..1
	MaxP95LatencyRatio  float64 // candidate p95 / previous release's p95
	Shadow              bool
	MaxDisagreementRate float64 // 0..1, of shadow comparisons
	MinRequests         uint64  // requests seen before rates are judged
	MaxCrashes          uint64  // runtime crashes tolerated
}

// builtinPolicy is what neither the bundle nor Config.DefaultPolicy sets.
var builtinPolicy = Policy{
	Duration:            10 * time.Minute,
	MaxErrorRate:        0.05,
	MaxP95LatencyRatio:  2,
	MaxDisagreementRate: 0.1,
	MinRequests:         20,
}

func (p Policy) orDefaults(d Policy) Policy {
	if p.Duration <= 0 {
		p.Duration = d.Duration
	}
	if p.MaxErrorRate <= 0 {
		p.MaxErrorRate = d.MaxErrorRate
	}
	if p.MaxP95LatencyRatio <= 0 {
		p.MaxP95LatencyRatio = d.MaxP95LatencyRatio
	}
	p.Shadow = p.Shadow || d.Shadow
	if p.MaxDisagreementRate <= 0 {
		p.MaxDisagreementRate = d.MaxDisagreementRate
	}
	if p.MinRequests == 0 {
		p.MinRequests = d.MinRequests
	}
	if p.MaxCrashes == 0 {
		p.MaxCrashes = d.MaxCrashes
	}
	return p
}

// policy is ld's bundle policy over the configured defaults.
func (l *Lifecycle) policy(ld *loaded) Policy {
	pp := ld.manifest.GetProbation()
	p := Policy{
		Duration:            time.Duration(pp.GetDurationS()) * time.Second,
		MaxErrorRate:        pp.GetMaxErrorRate(),
		MaxP95LatencyRatio:  pp.GetMaxP95LatencyRatio(),
		Shadow:              pp.GetShadow(),
		MaxDisagreementRate: pp.GetMaxDisagreementRate(),
		MinRequests:         uint64(pp.GetMinRequests()),
		MaxCrashes:          uint64(pp.GetMaxCrashes()),
	}
	return p.orDefaults(l.cfg.DefaultPolicy)
}

// verdict is what a probation check decides.
type verdict int

const (
	keepWatching verdict = iota
	commitIt
	rollBack
)

// evidence is what a probation check looks at.
type evidence struct {
	elapsed   time.Duration
	candidate modelstats.SeriesSnapshot
	previous  modelstats.SeriesSnapshot // the release before, while it served or shadowed
	crashes   uint64                    // runtime crashes since the switch
}

// judge applies p to the evidence. A breach rolls back at once; time up
// without one commits, even with few requests (a quiet device must not
// stay on probation for ever).
func judge(p Policy, ev evidence) (verdict, string) {
	if ev.crashes > p.MaxCrashes {
		return rollBack, fmt.Sprintf("runtime crashed %d times during probation (max %d)", ev.crashes, p.MaxCrashes)
	}
	c := ev.candidate
	if c.Requests >= p.MinRequests && c.Requests > 0 {
		if r := c.ErrorRate(); r > p.MaxErrorRate {
			return rollBack, fmt.Sprintf("error rate %.3f over %d requests (max %.3f)", r, c.Requests, p.MaxErrorRate)
		}
		if ev.previous.Latency.N >= p.MinRequests && ev.previous.P95 > 0 && c.P95 > 0 {
			if ratio := float64(c.P95) / float64(ev.previous.P95); ratio > p.MaxP95LatencyRatio {
				return rollBack, fmt.Sprintf("p95 latency %v is %.2f× the previous release's %v (max %.2f×)", c.P95, ratio, ev.previous.P95, p.MaxP95LatencyRatio)
			}
		}
	}
	if p.Shadow {
		if n := c.ShadowRuns - c.ShadowErrors; n >= p.MinRequests && n > 0 {
			if r := c.DisagreementRate(); r > p.MaxDisagreementRate {
				return rollBack, fmt.Sprintf("disagrees with the previous release on %.3f of %d shadowed requests (max %.3f)", r, n, p.MaxDisagreementRate)
			}
		}
	}
	if ev.elapsed >= p.Duration {
		return commitIt, ""
	}
	return keepWatching, ""
}

// startProbation starts the watcher of e's probation. e.op is held.
func (l *Lifecycle) startProbation(e *entry) {
	e.watchGen++
	gen := e.watchGen
	if ld := e.loaded[e.rec.Active.Slot]; ld != nil {
		if c, ok := ld.rt.(crasher); ok {
			e.crashes0 = c.Crashes()
		}
	}
	l.wg.Add(1)
	go l.watch(e, gen)
}

func (l *Lifecycle) watch(e *entry, gen uint64) {
	defer l.wg.Done()
	tick := time.NewTicker(l.cfg.CheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-tick.C:
		}
		if !l.check(e, gen) {
			return
		}
	}
}

// check judges e's probation once; false when the watcher should stop.
func (l *Lifecycle) check(e *entry, gen uint64) bool {
	e.op.Lock()
	defer e.op.Unlock()
	if e.watchGen != gen || e.rec.Phase != PhaseProbation {
		return false
	}
	ld := e.loaded[e.rec.Active.Slot]
	if ld == nil {
		return false
	}
	ev := evidence{elapsed: time.Since(e.rec.ProbationStart)}
	if c, ok := ld.rt.(crasher); ok {
		e.noteCrashes(ld.rt)
		ev.crashes = uint64(max(0, c.Crashes()-e.crashes0))
	}
	snap := e.stats.Snapshot()
	ev.candidate = snap.Releases[e.rec.Active.Release]
	if !e.rec.Previous.Empty() {
		ev.previous = snap.Releases[e.rec.Previous.Release]
	}
	ctx := context.Background()
	switch v, reason := judge(l.policy(ld), ev); v {
	case commitIt:
		if err := l.commit(ctx, e); err != nil {
			l.cfg.Logger.Error("commit", "model", e.name, "error", err)
			return true
		}
		return false
	case rollBack:
		if err := l.rollback(ctx, e, reason, true); err != nil {
			l.cfg.Logger.Error("rollback", "model", e.name, "error", err)
			return true
		}
		return false
	}
	return true
}
