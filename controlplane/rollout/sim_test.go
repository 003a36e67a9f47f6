package rollout

import (
	"hash/fnv"
	"strings"
	"testing"
)

// simSpec is the simulations' rollout: release 7 over devices on 6, with
// release 6's content re-released as 8 to roll back to.
const simSpec = `
bundle: {model: digits, release: 7, rollback_release: 8}
selector:
  labels: {role: camera}
stages:
  - {name: canary, percent: 5, bake: 20m}
  - {percent: 30, bake: 30m}
  - {percent: 100, bake: 30m}
gates:
  window: 10m
  min_devices_reporting: 3
  min_requests: 100
  error_rate: {max: 0.05, max_increase: 0.02}
  latency_p95: {max_ratio: 1.5}
  rollbacks: {max: 0}
  drift: {max_js: 0.1}
failure_policy: rollback
rate_limit: {devices_per_minute: 20}
`

func mustSpec(t testing.TB, s string) *Spec {
	t.Helper()
	spec, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// normal is a bundle that fetches in two minutes and commits after five.
func normal(q quality) behaviour {
	return behaviour{quality: q, fetchTicks: 2, probation: 5}
}

// some picks about one device in n, by a hash of its ID.
func some(n uint32) func(string) bool {
	return func(id string) bool {
		h := fnv.New32a()
		h.Write([]byte(id))
		return h.Sum32()%n == 0
	}
}

// simFleet is 100 camera devices on release 6, of which 10 cannot run
// the bundle (no onnx runtime) and 3 are not cameras.
func simFleet(t testing.TB, spec *Spec, b behaviour) *fleet {
	f := newFleet(t, spec, 100, 6, b)
	for i := range 10 {
		f.devices[i*10].facts = facts("tflite")
	}
	for i := range 3 {
		f.add("other-"+string(rune('a'+i)), map[string]string{"role": "gateway"}, facts("onnx"), 6)
	}
	return f
}

func TestSimGoodBundleCompletes(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(good))
	ticks := f.run(400)
	if f.state.Phase != PhaseCompleted {
		t.Fatalf("after %d ticks: %v", ticks, f)
	}
	rs := f.releases()
	if rs[7] != 90 || rs[6] != 13 || len(rs) != 2 {
		t.Fatalf("releases %v, want 90 on 7 and 13 (10 incompatible, 3 not selected) on 6", rs)
	}
	if n := len(f.kinds(DecideIncompatible)); n != 10 {
		t.Errorf("%d devices listed incompatible, want 10", n)
	}
	for _, d := range f.devices {
		if d.facts.Runtimes[0].Name == "tflite" && len(d.assigns) > 0 {
			t.Errorf("incompatible %s was assigned", d.id)
		}
		if len(d.assigns) > 1 {
			t.Errorf("%s assigned %d times", d.id, len(d.assigns))
		}
	}
	adv := f.kinds(DecideAdvance)
	if len(adv) != 2 || adv[0].Stage != 1 || adv[1].Stage != 2 || len(f.kinds(DecideComplete)) != 1 {
		t.Fatalf("advances %v", adv)
	}
	// Stage shares: 5% of 90 is 5 devices, 30% is 27.
	perStage := map[int]int{}
	for _, ds := range f.state.Devices {
		if ds.Phase == DeviceCommitted {
			perStage[ds.Stage]++
		}
	}
	if perStage[0] != 5 || perStage[1] != 22 || perStage[2] != 63 {
		t.Errorf("devices per stage %v, want 5, 22, 63", perStage)
	}
	if len(f.kinds(DecidePause))+len(f.kinds(DecideRollbackAll)) != 0 {
		t.Errorf("unexpected pause or rollback: %v", f.log)
	}
	t.Logf("completed in %d simulated minutes", ticks)
}

// failsAtCanary runs a breaching bundle and checks it stopped at the canary
// stage, on the named gate, with every device back on release 6's content.
func failsAtCanary(t *testing.T, b behaviour, gate string) *fleet {
	t.Helper()
	f := simFleet(t, mustSpec(t, simSpec), b)
	ticks := f.run(300)
	if f.state.Phase != PhaseRolledBack {
		t.Fatalf("after %d ticks: %v", ticks, f)
	}
	if n := len(f.kinds(DecideAdvance)); n != 0 {
		t.Fatalf("advanced %d times; must stop at the canary", n)
	}
	all := f.kinds(DecideRollbackAll)
	if len(all) != 1 || all[0].Breach == nil || all[0].Breach.Gate != gate || all[0].Breach.Status != GateBreach {
		t.Fatalf("rollback decisions %+v, want one on gate %s", all, gate)
	}
	if len(all[0].Breach.Evidence) == 0 {
		t.Errorf("the breach names no summary or device: %+v", all[0].Breach)
	}
	for _, d := range f.devices {
		if d.active != 6 && d.active != 8 {
			t.Errorf("%s ends on release %d, want the previous version (6, or its re-release 8)", d.id, d.active)
		}
	}
	switched := 0
	for _, ds := range f.state.Devices {
		if ds.Phase == DeviceRolledBack {
			switched++
		}
		if ds.Phase.switched() || ds.Phase == DeviceRollingBack {
			t.Errorf("device left in %s", ds.Phase)
		}
	}
	if switched == 0 || switched > 5 {
		t.Errorf("%d devices rolled back; the canary is 5", switched)
	}
	if len(f.kinds(DecideRollback)) != switched {
		t.Errorf("%d rollback decisions for %d devices", len(f.kinds(DecideRollback)), switched)
	}
	t.Logf("%s: %s", gate, all[0].Breach)
	return f
}

func TestSimBadBundleRollsBack(t *testing.T) {
	b := normal(good)
	b.refuses = some(2)
	f := failsAtCanary(t, b, GateRollbacks)
	if len(f.kinds(DecideDeviceFailed)) == 0 {
		t.Fatal("no device failure recorded")
	}
}

func TestSimSlowBundleRollsBack(t *testing.T) {
	failsAtCanary(t, normal(slow), GateLatencyP95)
}

func TestSimDriftingBundleRollsBack(t *testing.T) {
	failsAtCanary(t, normal(drifting), GateDrift)
}

func TestSimErringBundleRollsBack(t *testing.T) {
	failsAtCanary(t, normal(erring), GateErrorRate)
}

// With the pause policy a breach pauses; the devices stay where they are.
func TestSimBreachPauses(t *testing.T) {
	spec := mustSpec(t, strings.Replace(simSpec, "failure_policy: rollback", "failure_policy: pause", 1))
	f := simFleet(t, spec, normal(slow))
	f.run(60)
	if f.state.Phase != PhasePaused || !strings.Contains(f.state.Reason, "latency_p95") {
		t.Fatalf("%v", f)
	}
	if p := f.kinds(DecidePause); len(p) != 1 || p[0].Breach == nil || p[0].Breach.Gate != GateLatencyP95 {
		t.Fatalf("pauses %+v", p)
	}
	if rs := f.releases(); rs[7] != 5 || len(f.kinds(DecideRollback)) != 0 {
		t.Fatalf("releases %v: the 5 canaries stay on 7", rs)
	}
	for range 30 {
		if len(f.tick().Decisions) != 0 {
			t.Fatal("a paused rollout decided something")
		}
	}
}

// A partitioned canary (online, but its telemetry lost) never passes a
// gate, however long; once it reports again the rollout goes on.
func TestSimPartitionedCohortHolds(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(good))
	f.tick()
	canary := 0
	for id, ds := range f.state.Devices {
		if ds.Phase == DeviceAssigned {
			f.byID[id].silent = true
			canary++
		}
	}
	if canary != 5 {
		t.Fatalf("%d canaries assigned, want 5", canary)
	}
	for range 200 {
		res := f.tick()
		if f.state.Stage != 0 || f.state.Phase != PhaseRunning {
			t.Fatalf("a silent canary passed: %v", f)
		}
		for _, e := range res.Gates {
			if e.Gate != GateRollbacks && e.Status == GatePass {
				t.Fatalf("gate %s passed on silence: %+v", e.Gate, e)
			}
		}
	}
	last := f.results[len(f.results)-1].Gates
	if last[0].Gate != GateReporting || last[0].Status != GateInsufficient || !strings.Contains(last[0].Detail, "0 of 5 devices reporting, 3 needed") {
		t.Fatalf("reporting gate %+v", last[0])
	}
	for _, d := range f.devices {
		d.silent = false
	}
	f.run(400)
	if f.state.Phase != PhaseCompleted {
		t.Fatalf("after the partition healed: %v", f)
	}
}

// Abort in the middle of a stage rolls back every device switched.
func TestSimAbortMidStage(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(good))
	for f.state.Stage < 1 {
		f.tick()
	}
	f.act(ActionAbort, "wrong model")
	if f.state.Phase != PhaseRollingBack {
		t.Fatalf("%v", f)
	}
	switched := len(f.kinds(DecideAssign))
	// Those still fetching are back at once; the others are on their way.
	if c := f.state.Counts(); switched <= 5 || switched >= 27 || c[DeviceRollingBack]+c[DeviceRolledBack] != switched || c[DeviceRollingBack] == 0 {
		t.Fatalf("%d switched at abort; want mid-stage 1", switched)
	}
	f.run(50)
	if f.state.Phase != PhaseRolledBack || len(f.kinds(DecideRollback)) != switched {
		t.Fatalf("%v; %d rollbacks for %d switched", f, len(f.kinds(DecideRollback)), switched)
	}
	if rs := f.releases(); rs[7] != 0 || rs[8] != switched || rs[6] != 103-switched {
		t.Fatalf("releases %v", rs)
	}
	if _, _, err := Act(f.spec, f.state, ActionResume, "alice", "", f.now); err == nil {
		t.Fatal("resumed a rolled-back rollout")
	}
}

// Operators pause, resume and promote.
func TestSimOperatorActions(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(good))
	f.tick()
	f.act(ActionPause, "lunch")
	assigned := len(f.kinds(DecideAssign))
	for range 20 {
		f.tick()
	}
	if len(f.kinds(DecideAssign)) != assigned || f.state.Phase != PhasePaused || f.state.Reason != "paused by alice: lunch" {
		t.Fatalf("paused rollout moved: %v", f)
	}
	f.act(ActionResume, "")
	f.act(ActionPromote, "canary looks fine")
	if f.state.Stage != 1 || f.state.Phase != PhaseRunning {
		t.Fatalf("%v", f)
	}
	if adv := f.kinds(DecideAdvance); len(adv) != 1 || adv[0].Actor != "alice" {
		t.Fatalf("advances %+v", adv)
	}
	f.act(ActionPromote, "")
	f.act(ActionPromote, "")
	if f.state.Phase != PhaseCompleted {
		t.Fatalf("%v", f)
	}
	f.run(100)
	if rs := f.releases(); rs[7] != 90 {
		t.Fatalf("releases %v after promoting to the end", rs)
	}
	if _, _, err := Act(f.spec, f.state, ActionPause, "alice", "", f.now); err == nil {
		t.Fatal("paused a completed rollout")
	}
}

// A device enrolled after the rollout completed, matching the selector,
// gets the release; one that cannot run it does not.
func TestSimLateDevicesJoin(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(good))
	f.run(400)
	if f.state.Phase != PhaseCompleted {
		t.Fatalf("%v", f)
	}
	late := f.add("late-1", map[string]string{"role": "camera"}, facts("onnx"), 6)
	odd := f.add("late-2", map[string]string{"role": "camera"}, facts("tflite"), 6)
	f.run(20)
	if late.active != 7 || odd.active != 6 || len(odd.assigns) != 0 {
		t.Fatalf("late device on %d, incompatible one on %d", late.active, odd.active)
	}
}

// A breaching summary is acted on in the tick it arrives: the decision
// names the gate and a device summary.
func TestSimBreachDecidedOnArrival(t *testing.T) {
	f := simFleet(t, mustSpec(t, simSpec), normal(slow))
	first := int64(0)
	for range 60 {
		res := f.tick()
		if first == 0 {
			for id, ss := range f.summaries {
				if ds := f.state.Devices[id]; ds != nil && len(ss) > 0 && ss[len(ss)-1].Release == 7 {
					first = f.now
				}
			}
		}
		for _, d := range res.Decisions {
			if d.Kind == DecideRollbackAll {
				ticks := (f.now - first) / minute
				if first == 0 || ticks > 3 {
					t.Fatalf("decided %d ticks after the first slow summary", ticks)
				}
				if ev := d.Breach.Evidence[0]; ev.Release != 7 || ev.StartMs == 0 {
					t.Fatalf("evidence %+v", ev)
				}
				t.Logf("first slow summary at +%d min, decided %d ticks later (waiting for %d devices to report): %s",
					(first-f.results[0].State.StageStartedMs)/minute, ticks, f.spec.Gates.MinDevicesReporting, d.Breach)
				return
			}
		}
	}
	t.Fatalf("no decision: %v", f)
}
