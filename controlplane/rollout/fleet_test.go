package rollout

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// This file is a simulated fleet for the reconciler's tests: devices as
// state transitions (assigned → fetched → probation → committed, or a
// golden-check refusal, or a rollback on probation), each sending one
// window summary a minute made with proto/summary from synthetic records,
// and the real Reconcile and Execute driving them in simulated time.

const minute = int64(60_000)

// baseline is the drift baseline of every release: one feature x, uniform
// on [0, 1), and a categorical prediction.
var baseline = &pb.DriftBaseline{
	Features:   []*pb.FeatureBaseline{{Name: "x", BinEdges: []float64{0.2, 0.4, 0.6, 0.8}, Counts: []uint64{200, 200, 200, 200, 200}}},
	Prediction: &pb.FeatureBaseline{Name: "class", Categories: []string{"0", "1"}, Counts: []uint64{500, 500, 0}},
}

// manifest returns a model manifest of release rel whose variants run on
// onnx (CPU) or wasm.
func manifest(rel uint64) *pb.BundleManifest {
	return &pb.BundleManifest{SchemaVersion: 1, Name: "digits", Release: rel, Kind: pb.BundleKind_BUNDLE_KIND_MODEL,
		Variants: []*pb.RuntimeVariant{{Runtime: "onnx", Accelerators: []string{"cuda"}, Entry: "m.onnx"}, {Runtime: "onnx", Entry: "m.onnx"}, {Runtime: "wasm", Entry: "m.wasm"}},
		Drift:    baseline}
}

// facts of a device with these runtimes.
func facts(runtimes ...string) *pb.Facts {
	f := &pb.Facts{Os: "linux", Arch: "arm64"}
	for _, r := range runtimes {
		f.Runtimes = append(f.Runtimes, &pb.RuntimeInfo{Name: r})
	}
	return f
}

// quality is how a release behaves on a device.
type quality int

const (
	good     quality = iota
	slow             // p95 three times the good one's
	drifting         // inputs far from the baseline
	erring           // 30% of inferences fail
)

// template makes a window summary of n synthetic inferences of quality q
// with proto/summary, scored against the baseline.
func template(rel uint64, q quality, n int, seed uint64) *pb.WindowSummary {
	rng := rand.New(rand.NewPCG(seed, uint64(q)))
	w := summary.NewWindow(summary.Meta{Model: "digits", Release: rel}, baseline, 0)
	for range n {
		lat := 20 + 4*rng.NormFloat64()
		if q == slow {
			lat *= 3
		}
		x := rng.Float64()
		if q == drifting {
			x = math.Pow(x, 4)
		}
		ok := !(q == erring && rng.Float64() < 0.3) && rng.Float64() > 0.002
		w.Add(summary.Record{LatencyMs: max(lat, 1), OK: ok, Features: []float64{x}, Prediction: float64(rng.IntN(2)), HasPrediction: true})
	}
	s := w.Summary(minute)
	s.Scores = summary.Score(baseline, s, summary.EffectiveThresholds(nil, nil), 10)
	return s
}

// templates caches a few summaries per (release, quality).
type templates map[[2]uint64][]*pb.WindowSummary

func (ts templates) get(rel uint64, q quality, i int) *pb.WindowSummary {
	k := [2]uint64{rel, uint64(q)}
	if ts[k] == nil {
		for j := range 4 {
			ts[k] = append(ts[k], template(rel, q, 50, uint64(j)+rel*100))
		}
	}
	return ts[k][i%len(ts[k])]
}

// at is a template moved to the window [start, start+1m): a new message
// sharing the template's (never modified) parts.
func at(t *pb.WindowSummary, start int64) *pb.WindowSummary {
	return &pb.WindowSummary{Model: t.Model, Release: t.Release, StartMs: start, EndMs: start + minute, Windows: 1,
		Requests: t.Requests, Errors: t.Errors, Latency: t.Latency, Features: t.Features, Prediction: t.Prediction,
		Counters: t.Counters, Scores: t.Scores}
}

// simDevice is one simulated device.
type simDevice struct {
	id        string
	labels    map[string]string
	facts     *pb.Facts
	online    bool
	silent    bool // partitioned: online for the control plane, but its telemetry never arrives
	active    uint64
	health    pb.ModelState_Health
	rollbacks uint64
	lastError string

	want      uint64 // assigned release, 0: none
	wantAt    int64
	probation int64 // end of probation, 0: none
	previous  uint64
	assigns   []int64 // times it was assigned
}

func (d *simDevice) model() *pb.ModelState {
	if d.active == 0 && d.lastError == "" {
		return nil
	}
	return &pb.ModelState{Name: "digits", ActiveRelease: d.active, Health: d.health, Rollbacks: d.rollbacks, LastError: d.lastError}
}

// behaviour says how the release rolled out behaves on a device.
type behaviour struct {
	quality    quality
	refuses    func(id string) bool // fails its golden check
	rollsBack  func(id string) bool // rolls back on probation
	fetchTicks int64
	probation  int64
}

// fleet is a simulated fleet under one rollout.
type fleet struct {
	tb        testing.TB
	spec      *Spec
	manifest  *pb.BundleManifest
	state     State
	now       int64
	devices   []*simDevice
	byID      map[string]*simDevice
	summaries map[string][]*pb.WindowSummary
	tmpl      templates
	behave    behaviour
	// content maps a release to the quality it serves: the rollout's
	// release behaves per behave, the others are good.
	zones    map[string]*time.Location
	zonesFor int        // devices the zones were resolved for
	log      []Decision // every decision, in order
	logAt    []int64
	results  []Result
}

func newFleet(tb testing.TB, spec *Spec, n int, from uint64, b behaviour) *fleet {
	f := &fleet{tb: tb, spec: spec, manifest: manifest(spec.Bundle.Release), now: 1_760_000_000_000 - 1_760_000_000_000%minute,
		byID: map[string]*simDevice{}, summaries: map[string][]*pb.WindowSummary{}, tmpl: templates{}, behave: b}
	f.state = NewState("r-1", f.now)
	for i := range n {
		f.add(fmt.Sprintf("dev-%04d", i), map[string]string{"role": "camera"}, facts("onnx", "wasm"), from)
	}
	return f
}

func (f *fleet) add(id string, labels map[string]string, fa *pb.Facts, active uint64) *simDevice {
	d := &simDevice{id: id, labels: labels, facts: fa, online: true, active: active, health: pb.ModelState_HEALTH_HEALTHY}
	f.devices = append(f.devices, d)
	f.byID[id] = d
	return d
}

// Assign implements Assigner: the device fetches, checks and switches.
func (f *fleet) Assign(_ context.Context, device, model string, rel uint64) error {
	d := f.byID[device]
	if d == nil || model != "digits" {
		return fmt.Errorf("no device %s", device)
	}
	d.want, d.wantAt = rel, f.now
	d.assigns = append(d.assigns, f.now)
	return nil
}

// Rollback implements Assigner: the release sent back to is installed
// (a re-release of the previous content, or the previous release itself
// while the device has not committed).
func (f *fleet) Rollback(_ context.Context, device, model string, rel uint64) error {
	d := f.byID[device]
	if d == nil {
		return fmt.Errorf("no device %s", device)
	}
	d.want, d.wantAt = 0, 0
	if rel == 0 {
		rel = d.previous
	}
	// Like the agent, it never installs a lower release than it runs.
	if d.active < rel {
		d.active, d.health, d.probation = rel, pb.ModelState_HEALTH_HEALTHY, 0
	}
	return nil
}

// advanceDevices runs each device's lifecycle for one tick.
func (f *fleet) advanceDevices() {
	b := f.behave
	for _, d := range f.devices {
		switch {
		case d.want != 0 && d.want > d.active && f.now >= d.wantAt+b.fetchTicks*minute:
			rel := d.want
			d.want = 0
			if b.refuses != nil && b.refuses(d.id) {
				d.lastError = fmt.Sprintf("release %d rejected: golden check failed", rel)
				continue
			}
			d.previous, d.active, d.health = d.active, rel, pb.ModelState_HEALTH_PROBATION
			d.probation = f.now + b.probation*minute
		case d.probation != 0 && f.now >= d.probation:
			d.probation = 0
			if b.rollsBack != nil && b.rollsBack(d.id) {
				d.lastError = fmt.Sprintf("release %d rolled back: error rate", d.active)
				d.active, d.health = d.previous, pb.ModelState_HEALTH_ROLLED_BACK
				d.rollbacks++
				continue
			}
			d.health, d.lastError = pb.ModelState_HEALTH_HEALTHY, ""
		}
	}
}

// report adds each reporting device's summary of the minute just ended.
func (f *fleet) report() {
	for i, d := range f.devices {
		if !d.online || d.silent || d.active == 0 {
			continue
		}
		q := good
		if d.active == f.spec.Bundle.Release {
			q = f.behave.quality
		}
		s := at(f.tmpl.get(d.active, q, i), f.now-minute)
		ss := append(f.summaries[d.id], s)
		// Keep what the widest window needs.
		if len(ss) > 20 {
			ss = ss[len(ss)-20:]
		}
		f.summaries[d.id] = ss
	}
}

// input is the reconciler's input now.
func (f *fleet) input() Input {
	from, to := Window(f.spec, f.state, f.now)
	in := Input{Spec: f.spec, State: f.state, Manifest: f.manifest, NowMs: f.now, Summaries: map[string][]*pb.WindowSummary{},
		Previous: map[uint64]*pb.BundleManifest{}}
	for _, r := range []uint64{5, 6, 8} {
		in.Previous[r] = manifest(r)
	}
	var labels []map[string]string
	for _, d := range f.devices {
		in.Devices = append(in.Devices, Device{ID: d.id, Labels: d.labels, Facts: d.facts, Model: d.model(), Online: d.online})
		labels = append(labels, d.labels)
		for _, s := range f.summaries[d.id] {
			if s.StartMs >= from && s.StartMs < to {
				in.Summaries[d.id] = append(in.Summaries[d.id], s)
			}
		}
	}
	if f.zones == nil || len(labels) != f.zonesFor {
		f.zones, f.zonesFor = Zones(f.spec, labels), len(labels)
	}
	in.Zones = f.zones
	return in
}

// tick moves simulated time one minute on: devices act, report, and the
// scheduler reconciles and executes.
func (f *fleet) tick() Result {
	f.now += minute
	f.advanceDevices()
	f.report()
	return f.reconcile()
}

func (f *fleet) reconcile() Result {
	res := Reconcile(f.input())
	if err := Execute(context.Background(), f, &res.State, res.Decisions); err != nil {
		f.tb.Fatalf("execute: %v", err)
	}
	f.state = res.State
	for _, d := range res.Decisions {
		f.log = append(f.log, d)
		f.logAt = append(f.logAt, f.now)
	}
	f.results = append(f.results, res)
	return res
}

// act applies an operator action and reconciles at once.
func (f *fleet) act(a Action, why string) {
	next, d, err := Act(f.spec, f.state, a, "alice", why, f.now)
	if err != nil {
		f.tb.Fatalf("%s: %v", a, err)
	}
	f.state = next
	f.log = append(f.log, d)
	f.logAt = append(f.logAt, f.now)
	f.reconcile()
}

// run ticks until the rollout is terminal (and every device has settled)
// or max ticks passed; it returns the ticks run.
func (f *fleet) run(max int) int {
	for i := 1; i <= max; i++ {
		f.tick()
		if f.state.Terminal() && f.settled() {
			return i
		}
	}
	return max
}

// settled: no device is between assignment and commit.
func (f *fleet) settled() bool {
	for _, d := range f.devices {
		if d.want != 0 || d.probation != 0 {
			return false
		}
	}
	return true
}

// kinds returns the decisions of a kind, in order.
func (f *fleet) kinds(k DecisionKind) []Decision {
	var out []Decision
	for _, d := range f.log {
		if d.Kind == k {
			out = append(out, d)
		}
	}
	return out
}

// releases counts devices per active release.
func (f *fleet) releases() map[uint64]int {
	out := map[uint64]int{}
	for _, d := range f.devices {
		out[d.active]++
	}
	return out
}

func (f *fleet) String() string {
	rs := f.releases()
	keys := make([]uint64, 0, len(rs))
	for k := range rs {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	s := fmt.Sprintf("phase %s stage %d (%s);", f.state.Phase, f.state.Stage, f.state.Reason)
	for _, k := range keys {
		s += fmt.Sprintf(" release %d: %d", k, rs[k])
	}
	return s + fmt.Sprintf("; devices %v", f.state.Counts())
}
