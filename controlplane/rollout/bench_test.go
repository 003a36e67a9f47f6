package rollout

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSpec is simSpec without the rate limit's say in the breach timing:
// 1,000 devices, canary 1%.
func benchSpec(tb testing.TB, gates string) *Spec {
	s := strings.Replace(simSpec, "percent: 5, bake: 20m", "percent: 1, bake: 20m", 1)
	s = strings.Replace(s, "rate_limit: {devices_per_minute: 20}", "rate_limit: {devices_per_minute: 1000}", 1)
	if gates != "" {
		i := strings.Index(s, "gates:")
		j := strings.Index(s, "failure_policy:")
		s = s[:i] + gates + s[j:]
	}
	return mustSpec(tb, s)
}

// midRollout is a 1,000-device fleet in the middle of stage 1 (30%), every
// device with ten minutes of summaries in the window.
func midRollout(b *testing.B, spec *Spec) Input {
	f := newFleet(b, spec, 1000, 6, normal(good))
	for i := 0; i < 500 && f.state.Stage < 1; i++ {
		f.tick()
	}
	for range 9 {
		f.tick()
	}
	if f.state.Stage != 1 {
		b.Fatalf("not in stage 1: %v", f)
	}
	return f.input()
}

// BenchmarkReconcile is one scheduler pass over 1,000 devices (300 on
// the new release, 10 summaries each in the gates' window), by the gates
// configured: none but the reporting minimum, the rate gates (error rate,
// latency, rollbacks), and those plus drift (merging every histogram).
func BenchmarkReconcile(b *testing.B) {
	for _, tc := range []struct{ name, gates string }{
		{"gates=reporting", "gates: {min_devices_reporting: 3}\n"},
		{"gates=rates", "gates:\n  min_devices_reporting: 3\n  error_rate: {max: 0.05, max_increase: 0.02}\n  latency_p95: {max_ratio: 1.5}\n  rollbacks: {max: 0}\n"},
		{"gates=rates+drift", ""},
	} {
		b.Run("devices=1000/"+tc.name, func(b *testing.B) {
			in := midRollout(b, benchSpec(b, tc.gates))
			n := 0
			for _, ss := range in.Summaries {
				n += len(ss)
			}
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				Reconcile(in)
			}
			// CPU time is steadier than wall time on a shared machine.
			b.ReportMetric(float64((cpuTime()-cpu).Microseconds())/1000/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(n), "summaries/op")
		})
	}
}

// BenchmarkBreachToDecision runs a 1,000-device rollout of a slow bundle
// in simulated time (one tick a minute, one summary per device a minute)
// and reports how many ticks pass from the first summary of the new
// release to the rollback decision, and from that decision to every
// device reporting the previous version's content (the simulated device
// installs a rollback at once; on a real fleet add the bundle fetch).
func BenchmarkBreachToDecision(b *testing.B) {
	var toDecision, toBack int64
	for b.Loop() {
		f := newFleet(b, benchSpec(b, ""), 1000, 6, normal(slow))
		first, decided := int64(0), int64(0)
		for i := 0; i < 200 && f.state.Phase != PhaseRolledBack; i++ {
			res := f.tick()
			if first == 0 {
				for _, d := range f.devices {
					if ss := f.summaries[d.id]; len(ss) > 0 && ss[len(ss)-1].Release == 7 {
						first = f.now
						break
					}
				}
			}
			for _, d := range res.Decisions {
				if d.Kind == DecideRollbackAll {
					decided = f.now
				}
			}
		}
		if decided == 0 || f.state.Phase != PhaseRolledBack {
			b.Fatalf("no rollback: %v", f)
		}
		toDecision = (decided - first) / minute
		toBack = (f.logAt[len(f.logAt)-1] - decided) / minute
	}
	b.ReportMetric(float64(toDecision), "ticks-to-decision")
	b.ReportMetric(float64(toBack), "ticks-decision-to-rolled-back")
}

// BenchmarkAbortToRolledBack aborts a 1,000-device rollout once it is at
// 100% and reports the ticks until every device reports the previous
// version's content, and the rollbacks sent in the first tick (the
// scheduler does not rate-limit rollbacks).
func BenchmarkAbortToRolledBack(b *testing.B) {
	var ticks, first int
	for b.Loop() {
		spec := benchSpec(b, "gates: {min_devices_reporting: 3}\n")
		f := newFleet(b, spec, 1000, 6, normal(good))
		for i := 0; i < 1000 && f.state.Phase != PhaseCompleted; i++ {
			f.tick()
		}
		if f.state.Phase != PhaseCompleted {
			b.Fatalf("not completed: %v", f)
		}
		n := len(f.log)
		f.act(ActionAbort, "bench")
		first = 0
		for _, d := range f.log[n:] {
			if d.Kind == DecideRollback {
				first++
			}
		}
		ticks = 0
		for f.state.Phase != PhaseRolledBack {
			f.tick()
			ticks++
			if ticks > 100 {
				b.Fatalf("not rolled back: %v", f)
			}
		}
	}
	b.ReportMetric(float64(ticks), "ticks-abort-to-rolled-back")
	b.ReportMetric(float64(first), "rollbacks-sent-first-tick")
}
