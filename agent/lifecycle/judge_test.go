package lifecycle

import (
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/modelstats"
)

func series(requests, errors uint64, p95 time.Duration, shadow, disagree uint64) modelstats.SeriesSnapshot {
	s := modelstats.SeriesSnapshot{Requests: requests, Errors: errors, P95: p95, ShadowRuns: shadow, Disagreements: disagree}
	s.Latency.N = requests
	return s
}

func TestJudge(t *testing.T) {
	p := Policy{Duration: time.Minute, MaxErrorRate: 0.1, MaxP95LatencyRatio: 1.5, Shadow: true, MaxDisagreementRate: 0.2, MinRequests: 10}
	cases := []struct {
		name string
		ev   evidence
		want verdict
		why  string
	}{
		{"early and quiet", evidence{elapsed: time.Second}, keepWatching, ""},
		{"time up", evidence{elapsed: time.Minute, candidate: series(100, 1, time.Millisecond, 0, 0)}, commitIt, ""},
		{"time up, no traffic", evidence{elapsed: time.Minute}, commitIt, ""},
		{"crash", evidence{elapsed: time.Second, crashes: 1}, rollBack, "runtime crashed 1 times"},
		{"errors under min requests", evidence{candidate: series(9, 9, 0, 0, 0)}, keepWatching, ""},
		{"error rate", evidence{candidate: series(10, 2, 0, 0, 0)}, rollBack, "error rate 0.200"},
		{"slow", evidence{candidate: series(10, 0, 20*time.Millisecond, 0, 0), previous: series(10, 0, 10*time.Millisecond, 0, 0)}, rollBack, "2.00× the previous"},
		{"slow, no previous figures", evidence{candidate: series(10, 0, 20*time.Millisecond, 0, 0), previous: series(3, 0, 10*time.Millisecond, 0, 0)}, keepWatching, ""},
		{"disagrees", evidence{candidate: series(10, 0, 0, 10, 3)}, rollBack, "disagrees with the previous release on 0.300"},
		{"agrees enough", evidence{candidate: series(10, 0, 0, 10, 2)}, keepWatching, ""},
	}
	for _, c := range cases {
		got, why := judge(p, c.ev)
		if got != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: %v %q, want %v %q", c.name, got, why, c.want, c.why)
		}
	}
	q := p
	q.MaxCrashes = 2
	if v, _ := judge(q, evidence{crashes: 2}); v != keepWatching {
		t.Error("two crashes with max 2 rolled back")
	}
}

func TestPolicyDefaults(t *testing.T) {
	got := Policy{MaxErrorRate: 0.5}.orDefaults(builtinPolicy)
	if got.MaxErrorRate != 0.5 || got.Duration != builtinPolicy.Duration || got.MinRequests != builtinPolicy.MinRequests {
		t.Errorf("%+v", got)
	}
}

func TestHalfFloat(t *testing.T) {
	for h, want := range map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.9604645e-08, 0: 0} {
		if got := halfToFloat(h); got != want {
			t.Errorf("half %#x = %v, want %v", h, got, want)
		}
	}
}
