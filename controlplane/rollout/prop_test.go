package rollout

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// Property tests of the reconciler, after Nomad's reconciler property
// tests: seeded random fleets, specs, device behaviour, enrolments,
// partitions and operator actions, with invariants checked after every
// pass. A failure names its seed; the scenario is a function of the seed
// alone, so it reruns the same.

func randSpec(rng *rand.Rand) string {
	var b strings.Builder
	fmt.Fprintf(&b, "bundle: {model: digits, release: 7")
	if rng.IntN(2) == 0 {
		b.WriteString(", rollback_release: 8")
	}
	b.WriteString("}\nselector: {labels: {role: camera}}\nstages:\n")
	n := 1 + rng.IntN(4)
	pct, count := 0.0, 0
	usePct := rng.IntN(3) > 0
	for i := range n {
		bake := rng.IntN(4)
		if usePct {
			pct = min(100, pct+1+float64(rng.IntN(60)))
			if i == n-1 && rng.IntN(2) == 0 {
				pct = 100
			}
			fmt.Fprintf(&b, "  - {percent: %v, bake: %dm}\n", pct, bake)
		} else {
			count += 1 + rng.IntN(10)
			fmt.Fprintf(&b, "  - {count: %d, bake: %dm}\n", count, bake)
		}
		if pct == 100 {
			break
		}
	}
	fmt.Fprintf(&b, "gates:\n  window: %dm\n  min_devices_reporting: %d\n  min_requests: %d\n", 1+rng.IntN(10), 1+rng.IntN(4), rng.IntN(300))
	if rng.IntN(2) == 0 {
		b.WriteString("  error_rate: {max: 0.05}\n")
	}
	if rng.IntN(2) == 0 {
		b.WriteString("  latency_p95: {max_ratio: 1.5}\n")
	}
	if rng.IntN(2) == 0 {
		fmt.Fprintf(&b, "  rollbacks: {max: %d}\n", rng.IntN(3))
	}
	if rng.IntN(3) == 0 {
		b.WriteString("  drift: {max_js: 0.1, max_js_increase: 0.05}\n")
	}
	if rng.IntN(2) == 0 {
		b.WriteString("failure_policy: rollback\n")
	}
	if rng.IntN(2) == 0 {
		fmt.Fprintf(&b, "rate_limit: {devices_per_minute: %d}\n", 1+rng.IntN(8))
	}
	if rng.IntN(4) == 0 {
		fmt.Fprintf(&b, "maintenance:\n  windows:\n    - {start: \"%02d:00\", end: \"%02d:30\"}\n", rng.IntN(24), rng.IntN(24))
	}
	return b.String()
}

var zonesForProps = []string{"UTC", "Europe/Berlin", "Asia/Tokyo", "America/Los_Angeles", "Nowhere/Atlantis"}

func randDevice(f *fleet, rng *rand.Rand, id string) {
	labels := map[string]string{"role": []string{"camera", "camera", "camera", "gateway"}[rng.IntN(4)]}
	if rng.IntN(2) == 0 {
		labels["tz"] = zonesForProps[rng.IntN(len(zonesForProps))]
	}
	rts := [][]string{{"onnx"}, {"wasm"}, {"tflite"}, {"onnx", "wasm"}, nil}[rng.IntN(5)]
	fa := facts(rts...)
	if rng.IntN(15) == 0 {
		fa = nil // never sent its birth
	}
	d := f.add(id, labels, fa, []uint64{0, 5, 6, 6, 6, 7, 9}[rng.IntN(7)])
	d.online = rng.IntN(6) > 0
}

// checker holds what the invariants need across passes.
type checker struct {
	t       *testing.T
	seed    uint64
	spec    *Spec
	assigns []int64
}

func (c *checker) fail(format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("seed %d: %s", c.seed, fmt.Sprintf(format, args...))
}

// check verifies one pass: in → res.
func (c *checker) check(in Input, res Result) {
	c.t.Helper()
	spec, prev, next := in.Spec, in.State, res.State
	devs := map[string]Device{}
	for _, d := range in.Devices {
		devs[d.ID] = d
	}
	for _, d := range res.Decisions {
		switch d.Kind {
		case DecideAssign:
			dev := devs[d.Device]
			switch {
			case !spec.Selector.Matches(dev.Labels, dev.Facts):
				c.fail("assigned %s, which the selector does not match", d.Device)
			case Preflight(in.Manifest, dev.Facts) != "":
				c.fail("assigned incompatible %s: %s", d.Device, Preflight(in.Manifest, dev.Facts))
			case !dev.Online:
				c.fail("assigned offline %s", d.Device)
			case dev.Model.GetActiveRelease() >= spec.Bundle.Release:
				c.fail("assigned %s, which runs release %d", d.Device, dev.Model.GetActiveRelease())
			case prev.Devices[d.Device] != nil && prev.Devices[d.Device].Phase.switched():
				c.fail("assigned %s again", d.Device)
			case !spec.Maintenance.inWindow(dev.Labels, in.Zones, in.NowMs):
				c.fail("assigned %s outside its maintenance window", d.Device)
			case d.Release != spec.Bundle.Release:
				c.fail("assigned release %d", d.Release)
			}
			c.assigns = append(c.assigns, in.NowMs)
		case DecideRollback:
			if ds := next.Devices[d.Device]; ds == nil || ds.Phase != DeviceRollingBack && ds.Phase != DeviceRolledBack {
				c.fail("rollback of %s, which is %v", d.Device, ds)
			}
		}
	}
	// The stage's share: switched devices never exceed it (a completed
	// rollout follows its selector to every device).
	if next.Phase == PhaseRunning || next.Phase == PhasePaused {
		n, switched := 0, 0
		for _, ds := range next.Devices {
			if ds.Phase.switched() {
				switched++
				n++
			} else if ds.Phase == DeviceRollingBack || ds.Phase == DeviceRolledBack || ds.Phase == DeviceStranded {
				n++
			}
		}
		for id, d := range devs {
			if next.Devices[id] == nil && spec.Selector.Matches(d.Labels, d.Facts) && Preflight(in.Manifest, d.Facts) == "" &&
				d.Model.GetActiveRelease() < spec.Bundle.Release {
				n++
			}
		}
		if t := spec.stageTarget(next.Stage, n); switched > t {
			c.fail("%d devices switched in stage %d, share %d of %d", switched, next.Stage, t, n)
		}
	}
	// The rate limit, over every sliding minute.
	if lim := spec.RateLimit.DevicesPerMinute; lim > 0 {
		for _, t := range c.assigns {
			k := 0
			for _, u := range c.assigns {
				if u > t-minute && u <= t {
					k++
				}
			}
			if k > lim {
				c.fail("%d assignments in the minute to %d, limit %d", k, t, lim)
			}
		}
	}
	// Stages only move forward; a rolled-back rollout stays so.
	if next.Stage < prev.Stage {
		c.fail("stage went back from %d to %d", prev.Stage, next.Stage)
	}
	if prev.Phase == PhaseRolledBack && next.Phase != PhaseRolledBack {
		c.fail("left rolled_back for %s", next.Phase)
	}
	if prev.Phase == PhaseRollingBack && next.Phase != PhaseRollingBack && next.Phase != PhaseRolledBack {
		c.fail("rolling back turned %s", next.Phase)
	}
	// Idempotence: the same world again decides nothing and changes nothing.
	again := in
	again.State = next
	res2 := Reconcile(again)
	if len(res2.Decisions) != 0 {
		c.fail("reconciling the result again decided %v", res2.Decisions)
	}
	if !res2.State.Equal(next) {
		c.fail("reconciling the result again changed the state")
	}
	// Determinism: the devices' order in the input changes nothing.
	shuffled := in
	shuffled.Devices = append([]Device(nil), in.Devices...)
	rand.New(rand.NewPCG(c.seed, uint64(in.NowMs))).Shuffle(len(shuffled.Devices), func(i, j int) {
		shuffled.Devices[i], shuffled.Devices[j] = shuffled.Devices[j], shuffled.Devices[i]
	})
	res3 := Reconcile(shuffled)
	if !reflect.DeepEqual(res3.Decisions, res.Decisions) || !res3.State.Equal(next) {
		c.fail("a shuffled device list decided differently")
	}
}

func TestReconcileProperties(t *testing.T) {
	seeds := 60
	if testing.Short() || raceEnabled {
		seeds = 15
	}
	for seed := range uint64(seeds) {
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		specText := randSpec(rng)
		spec, err := Parse([]byte(specText))
		if err != nil {
			t.Fatalf("seed %d: spec %v\n%s", seed, err, specText)
		}
		q := []quality{good, good, slow, drifting, erring}[rng.IntN(5)]
		b := behaviour{quality: q, fetchTicks: int64(rng.IntN(3)), probation: int64(rng.IntN(4))}
		if rng.IntN(3) == 0 {
			b.refuses = some(uint32(2 + rng.IntN(8)))
		}
		if rng.IntN(3) == 0 {
			b.rollsBack = some(uint32(2 + rng.IntN(8)))
		}
		f := newFleet(t, spec, 0, 6, b)
		f.now += int64(rng.IntN(24*60)) * minute
		f.state = NewState(fmt.Sprintf("r-%d", seed), f.now)
		for i := range rng.IntN(40) {
			randDevice(f, rng, fmt.Sprintf("dev-%03d", i))
		}
		c := &checker{t: t, seed: seed, spec: spec}
		pass := func() {
			in := f.input()
			res := f.reconcile()
			c.check(in, res)
		}
		for tick := range 90 {
			f.now += minute
			f.advanceDevices()
			f.report()
			switch r := rng.IntN(100); {
			case r < 4:
				randDevice(f, rng, fmt.Sprintf("late-%03d", tick))
			case r < 10 && len(f.devices) > 0:
				d := f.devices[rng.IntN(len(f.devices))]
				d.online = !d.online
			case r < 14 && len(f.devices) > 0:
				d := f.devices[rng.IntN(len(f.devices))]
				d.silent = !d.silent
			case r < 17:
				a := []Action{ActionPause, ActionResume, ActionPromote, ActionAbort}[rng.IntN(4)]
				prevStage := f.state.Stage
				next, _, err := Act(f.spec, f.state, a, "op", "", f.now)
				if err != nil && !errors.Is(err, ErrAction) {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if err == nil {
					if a == ActionPromote && next.Stage < prevStage {
						t.Fatalf("seed %d: promote went back", seed)
					}
					f.state = next
				}
			}
			pass()
		}
		// Abort whatever is left: every switched device ends rolled back.
		if next, _, err := Act(f.spec, f.state, ActionAbort, "op", "end", f.now); err == nil {
			f.state = next
		}
		for _, d := range f.devices {
			d.online, d.silent = true, false
		}
		for range 20 {
			f.now += minute
			f.advanceDevices()
			pass()
		}
		if f.state.Phase != PhaseRolledBack {
			t.Fatalf("seed %d: abort ended %s: %v", seed, f.state.Phase, f)
		}
		for id, ds := range f.state.Devices {
			if ds.Phase.switched() || ds.Phase == DeviceRollingBack {
				t.Fatalf("seed %d: %s left %s after abort", seed, id, ds.Phase)
			}
			if ds.Phase == DeviceRolledBack && f.byID[id].active == 7 {
				t.Fatalf("seed %d: %s rolled back but runs 7", seed, id)
			}
			if ds.Phase == DeviceStranded && (f.byID[id].active != 7 || spec.Bundle.RollbackRelease != 0) {
				t.Fatalf("seed %d: %s stranded on %d with rollback release %d", seed, id, f.byID[id].active, spec.Bundle.RollbackRelease)
			}
		}
	}
}

func TestOrderIsStableAndSpread(t *testing.T) {
	var ids []string
	for i := range 1000 {
		ids = append(ids, fmt.Sprintf("dev-%04d", i))
	}
	a := Order("r-1", ids)
	rev := append([]string(nil), ids...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if !reflect.DeepEqual(a, Order("r-1", rev)) {
		t.Fatal("order depends on the input order")
	}
	if reflect.DeepEqual(a, Order("r-2", ids)) {
		t.Fatal("two rollouts share an order")
	}
	// The first tenth is spread over the fleet: each hundred of IDs holds
	// some of it, none most of it.
	per := map[int]int{}
	for _, id := range a[:100] {
		var n int
		fmt.Sscanf(id, "dev-%d", &n)
		per[n/100]++
	}
	for h := range 10 {
		if per[h] < 2 || per[h] > 25 {
			t.Fatalf("first 100 by hundreds of IDs: %v", per)
		}
	}
	// A device added later does not move the others.
	b := Order("r-1", append(append([]string(nil), ids...), "dev-late"))
	var without []string
	for _, id := range b {
		if id != "dev-late" {
			without = append(without, id)
		}
	}
	if !reflect.DeepEqual(a, without) {
		t.Fatal("a new device reordered the others")
	}
}

func TestMaintenanceWindows(t *testing.T) {
	spec := mustSpec(t, `
bundle: {model: digits, release: 7}
stages: [{count: 1}]
maintenance:
  default_timezone: Europe/Berlin
  windows:
    - {days: [fri], start: "22:00", end: "02:00"}
    - {days: [sun], start: "10:00", end: "11:00"}
`)
	m := spec.Maintenance
	zones := Zones(spec, []map[string]string{{"tz": "Asia/Tokyo"}, {"tz": "Nowhere/Atlantis"}})
	if len(zones) != 2 {
		t.Fatalf("zones %v: want Berlin and Tokyo, not the unknown one", zones)
	}
	at := func(s string) int64 {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm.UnixMilli()
	}
	berlin, tokyo, atlantis := map[string]string{}, map[string]string{"tz": "Asia/Tokyo"}, map[string]string{"tz": "Nowhere/Atlantis"}
	for _, tc := range []struct {
		labels map[string]string
		when   string
		want   bool
	}{
		{berlin, "2026-11-27T21:30:00Z", true},  // Fri 22:30 in Berlin
		{berlin, "2026-11-27T20:59:00Z", false}, // Fri 21:59
		{berlin, "2026-11-28T00:30:00Z", true},  // Sat 01:30: Friday's window
		{berlin, "2026-11-28T01:00:00Z", false}, // Sat 02:00: closed
		{berlin, "2026-11-28T21:30:00Z", false}, // Sat 22:30: not a Friday
		{berlin, "2026-11-29T09:15:00Z", true},  // Sun 10:15
		{tokyo, "2026-11-27T13:30:00Z", true},   // Fri 22:30 in Tokyo
		{tokyo, "2026-11-27T21:30:00Z", false},  // Sat 06:30 in Tokyo
		{atlantis, "2026-11-27T21:30:00Z", false},
	} {
		if got := m.inWindow(tc.labels, zones, at(tc.when)); got != tc.want {
			t.Errorf("%v at %s: %v, want %v", tc.labels, tc.when, got, tc.want)
		}
	}
	var none *Maintenance
	if !none.inWindow(nil, nil, 0) {
		t.Error("no maintenance windows must mean always")
	}
}
