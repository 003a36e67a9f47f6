package rollout

import (
	"fmt"
	"strings"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Device is what the reconciler knows of one device.
type Device struct {
	ID     string
	Labels map[string]string
	Facts  *pb.Facts // from its birth; nil when unknown
	// Model is the device's reported state of the rollout's model; nil
	// when it has reported none.
	Model *pb.ModelState
	// Online devices are the ones assigned: an offline one waits for its
	// turn until it is back, rather than hold its stage.
	Online         bool
	Decommissioned bool
	// DesiredRevision is the revision of the device's latest desired state
	// (0: the caller does not track revisions), and ReportedRevision the
	// desired revision its latest reported state answers. A device sent
	// back is rolled back only on a report that answers the withdrawal.
	DesiredRevision  uint64
	ReportedRevision uint64
	// Unreported is set for a device whose state is unknown: it never
	// reported, or the caller lost its report. It is neither assigned nor
	// sorted (a device already skipped stays skipped) until it reports;
	// the rollout's devices are judged as by a report of nothing.
	Unreported bool
}

// Input is everything one reconciliation looks at. The reconciler reads
// nothing else: no clock, no store, no network.
type Input struct {
	Spec  *Spec
	State State
	// Manifest is the manifest of Spec.Bundle: its variants decide
	// compatibility (preflight) and its drift baseline scores the cohort.
	Manifest *pb.BundleManifest
	// Previous holds manifests of the releases devices ran before, by
	// release, for the drift gate's max_js_increase; optional.
	Previous map[uint64]*pb.BundleManifest
	// Rereleases maps a release devices ran before to a re-release of its
	// content above Spec.Bundle.Release (flotctl bundle rerelease), for a
	// spec without bundle.rollback_release: a device that runs the new
	// release goes back there, since it never installs the lower counter
	// it ran. Optional; see SendBackTo.
	Rereleases map[uint64]uint64
	// Devices are the fleet's devices (any order; the reconciler orders
	// them by OrderKey).
	Devices []Device
	// Summaries holds each device's summaries of the model whose windows
	// start in Window(Spec, State, NowMs); others are ignored.
	Summaries map[string][]*pb.WindowSummary
	// Zones are the maintenance windows' time zones (see Zones).
	Zones map[string]*time.Location
	NowMs int64
}

// Result is a reconciliation's outcome.
type Result struct {
	// State is the next state: persist it with the decisions.
	State     State
	Decisions []Decision
	// Gates are the gate evaluations of this pass, for operators.
	Gates []Evaluation
}

// Window is the range of summary window starts the next reconciliation
// judges: the spec's gate window ending now, never reaching back before
// the rollout began or was last resumed.
func Window(s *Spec, st State, nowMs int64) (fromMs, toMs int64) {
	return max(nowMs-s.Gates.Window.Milliseconds(), st.EvalFromMs), nowMs
}

// Reconcile is the rollout scheduler: a pure function of its input. It
// observes what devices report, judges the gates, and decides — assign
// devices (in rollout order, within the stage's share, the rate limit and
// the maintenance windows), advance a stage (every device of it committed,
// bake time over, every gate passing), pause or roll back on a breach
// (per the failure policy), complete — until nothing more follows, so
// reconciling its own result again decides nothing.
//
// Rules (docs/rollouts.md):
//   - a device is assigned only when it matches the selector, can run a
//     variant of the bundle (Preflight) and runs an older release;
//   - the number of devices switched never exceeds the current stage's
//     share, and assignments in any minute never exceed the rate limit;
//   - a gate passes only on enough devices reporting: silence never passes;
//   - rollbacks ignore the rate limit and maintenance windows.
func Reconcile(in Input) Result {
	st := in.State.Clone()
	if st.Devices == nil {
		st.Devices = map[string]*DeviceState{}
	}
	r := &reconciler{in: in, spec: in.Spec, st: &st, release: in.Spec.Bundle.Release}
	r.observe()
	for range len(in.Spec.Stages) + 4 {
		if !r.step() {
			break
		}
	}
	if r.evals == nil && st.Phase != PhaseRolledBack {
		r.evaluate()
	}
	return Result{State: st, Decisions: r.decisions, Gates: r.evals}
}

type reconciler struct {
	in        Input
	spec      *Spec
	st        *State
	release   uint64
	devices   map[string]*Device
	order     []string  // present devices, in rollout order
	eligible  []*Device // selected, compatible, older release, untouched: in order
	decisions []Decision
	evals     []Evaluation // nil: to compute
}

func (r *reconciler) decide(d Decision) {
	d.Actor = Scheduler
	d.Stage = r.st.Stage
	if d.Device != "" || d.Kind == DecideAssign || d.Kind == DecideRollback {
		d.Model = r.spec.Bundle.Model
	}
	r.decisions = append(r.decisions, d)
}

// observe classifies every present device and takes in what they report.
func (r *reconciler) observe() {
	r.devices = make(map[string]*Device, len(r.in.Devices))
	ids := make([]string, 0, len(r.in.Devices))
	for i := range r.in.Devices {
		d := &r.in.Devices[i]
		if d.Decommissioned {
			continue
		}
		if _, dup := r.devices[d.ID]; dup {
			continue
		}
		r.devices[d.ID] = d
		ids = append(ids, d.ID)
	}
	r.order = Order(r.st.ID, ids)
	for _, id := range r.order {
		d := r.devices[id]
		ds := r.st.Devices[id]
		if ds == nil || ds.Phase == DeviceIncompatible || ds.Phase == DeviceSkipped {
			if d.Unreported {
				continue
			}
			r.classify(d, ds)
			continue
		}
		r.observeDevice(d, ds)
	}
}

// classify sorts a device the rollout has not switched: not selected,
// incompatible, skipped or eligible.
func (r *reconciler) classify(d *Device, ds *DeviceState) {
	if !r.spec.Selector.Matches(d.Labels, d.Facts) {
		delete(r.st.Devices, d.ID)
		return
	}
	if why := Preflight(r.in.Manifest, d.Facts); why != "" {
		if ds == nil || ds.Phase != DeviceIncompatible || ds.Reason != why {
			r.st.Devices[d.ID] = &DeviceState{Phase: DeviceIncompatible, Reason: why}
			r.decide(Decision{Kind: DecideIncompatible, Device: d.ID, Reason: why})
			r.evals = nil
		}
		return
	}
	if a := d.Model.GetActiveRelease(); a >= r.release {
		why := fmt.Sprintf("already runs release %d", a)
		if ds == nil || ds.Phase != DeviceSkipped || ds.Reason != why {
			r.st.Devices[d.ID] = &DeviceState{Phase: DeviceSkipped, Reason: why}
			r.decide(Decision{Kind: DecideSkip, Device: d.ID, Reason: why})
			r.evals = nil
		}
		return
	}
	if ds != nil {
		delete(r.st.Devices, d.ID)
		r.evals = nil
	}
	r.eligible = append(r.eligible, d)
}

// selfRollback says whether device m, assigned as ds, refused or rolled
// back the release by itself, and why.
func (r *reconciler) selfRollback(m *pb.ModelState, ds *DeviceState) (string, bool) {
	if m == nil || m.GetActiveRelease() == r.release {
		return "", false
	}
	le := m.GetLastError()
	// The agent's own words (agent/lifecycle): "release N rejected: …",
	// "release N rolled back: …", maybe after what the installer says
	// ("staged in slot b; activation: …; release N rejected: …").
	prefix := fmt.Sprintf("release %d ", r.release)
	for part := range strings.SplitSeq(le, "; ") {
		if strings.HasPrefix(part, prefix+"rejected") || strings.HasPrefix(part, prefix+"rolled back") {
			return le, true
		}
	}
	if m.GetRollbacks() > ds.RollbacksAtAssign {
		if le == "" {
			le = "rolled back on the device"
		}
		return le, true
	}
	return "", false
}

func (r *reconciler) observeDevice(d *Device, ds *DeviceState) {
	m := d.Model
	now := r.in.NowMs
	before := ds.Phase
	switch ds.Phase {
	case DeviceAssigned, DeviceCommitted:
		if m.GetActiveRelease() == r.release {
			switch m.GetHealth() {
			case pb.ModelState_HEALTH_HEALTHY:
				if ds.Phase == DeviceAssigned {
					ds.Phase, ds.CommittedMs = DeviceCommitted, now
				}
			case pb.ModelState_HEALTH_UNHEALTHY:
				ds.Phase, ds.Reason = DeviceFailed, "unhealthy on the release: "+m.GetLastError()
			}
		} else if why, ok := r.selfRollback(m, ds); ok {
			ds.Phase, ds.Reason = DeviceFailed, why
		}
		if ds.Phase == DeviceFailed {
			ds.FailedMs = now
			r.decide(Decision{Kind: DecideDeviceFailed, Device: d.ID, Release: r.release, Reason: ds.Reason})
		}
	case DeviceStranded:
		// It may yet roll back by itself, on probation.
		if m != nil && m.GetActiveRelease() != r.release {
			ds.Phase, ds.RolledBackMs = DeviceRolledBack, now
		}
	case DeviceRollingBack:
		if why, ok := r.stranded(m, ds.RollbackTo); ok {
			ds.Phase, ds.Reason = DeviceStranded, why
			r.decide(Decision{Kind: DecideStranded, Device: d.ID, Release: ds.RollbackTo, Reason: why})
			break
		}
		// A report from before the device took in the withdrawal proves
		// nothing: a canary only assigned still reports its previous
		// release, and may yet activate the new one.
		if d.DesiredRevision != 0 && d.ReportedRevision <= ds.RollbackAfterRevision {
			break
		}
		a := m.GetActiveRelease()
		back := m != nil && (a == ds.RollbackTo || ds.From != 0 && a == ds.From) ||
			ds.From == 0 && ds.RollbackTo == 0 && a != r.release
		if back {
			ds.Phase, ds.RolledBackMs = DeviceRolledBack, now
		}
	}
	if ds.Phase != before {
		r.evals = nil
	}
}

// SendBackTo is the release a switched device ds, reporting m, is sent
// back to (0: its assignment of the model is withdrawn):
//   - the spec's bundle.rollback_release when it names one;
//   - else, when the device runs the rollout's release and so can no
//     longer install the lower release it ran before, a re-release of that
//     release's content above the rollout's (rereleases), when there is one;
//   - else the release it ran when the rollout first assigned it
//     (DeviceState.From), or 0 when it ran none: the assignment is
//     withdrawn.
//
// A device that runs the rollout's release and has nowhere above it to go
// is stranded (see stranded).
func SendBackTo(spec *Spec, ds *DeviceState, m *pb.ModelState, rereleases map[uint64]uint64) uint64 {
	if to := spec.Bundle.RollbackRelease; to != 0 {
		return to
	}
	if m.GetActiveRelease() == spec.Bundle.Release && ds.From != 0 {
		if re := rereleases[ds.From]; re > spec.Bundle.Release {
			return re
		}
	}
	return ds.From
}

// stranded says whether a device reporting m can never take release to,
// and why: it runs the rollout's release, and to is lower (0: no release).
func (r *reconciler) stranded(m *pb.ModelState, to uint64) (string, bool) {
	if m.GetActiveRelease() != r.release || to > r.release {
		return "", false
	}
	if to == 0 {
		return fmt.Sprintf("it ran no release of %s before %d, so there is nothing to go back to", r.spec.Bundle.Model, r.release), true
	}
	return fmt.Sprintf("it runs release %d and never installs the lower %d: re-release the previous version above %d (flotctl bundle rerelease, then bundle push) and name it in bundle.rollback_release",
		r.release, to, r.release), true
}

// eligibleCount is the number of devices the stages' shares are of: the
// selected, compatible devices below the release, switched or not.
func (r *reconciler) eligibleCount() int {
	n := len(r.eligible)
	for _, ds := range r.st.Devices {
		if ds.Phase.switched() || ds.Phase == DeviceRollingBack || ds.Phase == DeviceRolledBack || ds.Phase == DeviceStranded {
			n++
		}
	}
	return n
}

func (r *reconciler) switchedCount() int {
	n := 0
	for _, ds := range r.st.Devices {
		if ds.Phase.switched() {
			n++
		}
	}
	return n
}

// step advances the state machine once; it reports whether anything
// changed that may let it go further.
func (r *reconciler) step() bool {
	st := r.st
	switch st.Phase {
	case PhaseRunning:
		if b := r.breach(); b != nil {
			why := fmt.Sprintf("gate %s breached: %s", b.Gate, b.Detail)
			st.Reason = why
			if r.spec.FailurePolicy == PolicyRollback {
				st.Phase = PhaseRollingBack
				r.decide(Decision{Kind: DecideRollbackAll, Reason: why, Breach: b})
			} else {
				st.Phase = PhasePaused
				r.decide(Decision{Kind: DecidePause, Reason: why, Breach: b})
			}
			return true
		}
		n := r.eligibleCount()
		target := r.spec.stageTarget(st.Stage, n)
		if switched := r.switchedCount(); switched < target {
			r.assign(target - switched)
			return false
		}
		if !r.stageCommitted() {
			return false
		}
		if st.BakeStartedMs == 0 {
			st.BakeStartedMs = r.in.NowMs
		}
		if r.in.NowMs < st.BakeStartedMs+r.spec.Stages[st.Stage].Bake.Milliseconds() {
			return false
		}
		for _, e := range r.gates() {
			if e.Status != GatePass {
				return false
			}
		}
		r.advance(Scheduler, "")
		return true
	case PhaseCompleted:
		// Devices that join the selector later get the release too.
		r.assign(len(r.eligible))
		return false
	case PhaseRollingBack:
		pending := 0
		for _, id := range r.order {
			ds := r.st.Devices[id]
			if ds == nil {
				continue
			}
			if ds.Phase.switched() {
				back := SendBackTo(r.spec, ds, r.devices[id].Model, r.in.Rereleases)
				r.evals = nil
				if why, ok := r.stranded(r.devices[id].Model, back); ok {
					ds.Phase, ds.Reason = DeviceStranded, why
					r.decide(Decision{Kind: DecideStranded, Device: id, Release: back, Reason: why})
					continue
				}
				ds.Phase, ds.RollbackMs, ds.RollbackTo = DeviceRollingBack, r.in.NowMs, back
				ds.RollbackAfterRevision = r.devices[id].DesiredRevision
				r.decide(Decision{Kind: DecideRollback, Device: id, Release: back, Reason: st.Reason})
				// One that never switched is back already.
				r.observeDevice(r.devices[id], ds)
			}
			if ds.Phase == DeviceRollingBack {
				pending++
			}
		}
		// Devices gone from the fleet (decommissioned) are not waited for.
		if pending == 0 {
			st.Phase = PhaseRolledBack
			r.decide(Decision{Kind: DecideRolledBack, Reason: st.Reason})
			return true
		}
		return false
	}
	return false
}

// advance moves to the next stage, or completes after the last.
func (r *reconciler) advance(actor, why string) {
	d := advance(r.spec, r.st, r.in.NowMs, actor, why)
	r.decisions = append(r.decisions, d)
	r.evals = nil
}

func advance(spec *Spec, st *State, nowMs int64, actor, why string) Decision {
	if st.Stage+1 >= len(spec.Stages) {
		st.Phase = PhaseCompleted
		return Decision{Kind: DecideComplete, Actor: actor, Stage: st.Stage, Reason: why}
	}
	st.Stage++
	st.StageStartedMs, st.BakeStartedMs = nowMs, 0
	return Decision{Kind: DecideAdvance, Actor: actor, Stage: st.Stage, Reason: why}
}

// stageCommitted reports whether every present switched device committed
// (or failed: the rollbacks gate judges those).
func (r *reconciler) stageCommitted() bool {
	for _, id := range r.order {
		if ds := r.st.Devices[id]; ds != nil && ds.Phase == DeviceAssigned {
			return false
		}
	}
	return true
}

// assign assigns up to room eligible devices, in rollout order, within
// the rate limit and their maintenance windows.
func (r *reconciler) assign(room int) {
	now := r.in.NowMs
	if lim := r.spec.RateLimit.DevicesPerMinute; lim > 0 {
		recent := 0
		for _, ds := range r.st.Devices {
			if ds.AssignedMs > now-time.Minute.Milliseconds() && ds.AssignedMs <= now {
				recent++
			}
		}
		room = min(room, lim-recent)
	}
	rest := r.eligible[:0:0]
	for _, d := range r.eligible {
		if room <= 0 || !d.Online || !r.spec.Maintenance.inWindow(d.Labels, r.in.Zones, now) {
			rest = append(rest, d)
			continue
		}
		r.st.Devices[d.ID] = &DeviceState{Phase: DeviceAssigned, Stage: r.st.Stage, From: d.Model.GetActiveRelease(),
			RollbacksAtAssign: d.Model.GetRollbacks(), AssignedMs: now}
		r.decide(Decision{Kind: DecideAssign, Device: d.ID, Release: r.release})
		room--
		r.evals = nil
	}
	r.eligible = rest
}

// breach returns the first breached gate, if any.
func (r *reconciler) breach() *Evaluation {
	for _, e := range r.gates() {
		if e.Status == GateBreach {
			return &e
		}
	}
	return nil
}

func (r *reconciler) gates() []Evaluation {
	if r.evals == nil {
		r.evaluate()
	}
	return r.evals
}

// evaluate builds the two cohorts over the window and judges the gates.
// The rollout cohort is the switched devices' summaries of the new
// release; the previous-release cohort is the eligible devices' summaries
// of other releases.
func (r *reconciler) evaluate() {
	from, to := Window(r.spec, *r.st, r.in.NowMs)
	cur, base := &cohort{}, &cohort{}
	var failed []Evidence
	switched := 0
	in := func(s *pb.WindowSummary) bool {
		return s.GetModel() == r.spec.Bundle.Model && s.GetStartMs() >= from && s.GetStartMs() < to
	}
	for _, id := range r.order {
		ds := r.st.Devices[id]
		if ds == nil || !ds.Phase.switched() {
			continue
		}
		switched++
		cur.members++
		// Failures before the last resume were accepted by the operator
		// who resumed.
		if ds.Phase == DeviceFailed && ds.FailedMs >= r.st.EvalFromMs {
			failed = append(failed, Evidence{Device: id, Note: ds.Reason})
		}
		for _, s := range r.in.Summaries[id] {
			if in(s) && s.GetRelease() == r.release {
				cur.summaries = append(cur.summaries, deviceSummary{id, s})
			}
		}
	}
	for _, d := range r.eligible {
		base.members++
		for _, s := range r.in.Summaries[d.ID] {
			if in(s) && s.GetRelease() != r.release {
				base.summaries = append(base.summaries, deviceSummary{d.ID, s})
			}
		}
	}
	drift := r.spec.Gates.Drift != nil
	manifests := func(rel uint64) *pb.BundleManifest {
		if rel == r.release {
			return r.in.Manifest
		}
		return r.in.Previous[rel]
	}
	curF := cur.figures(manifests, drift)
	baseF := base.figures(manifests, drift && r.spec.Gates.Drift.MaxJSIncrease != nil)
	need := max(1, min(r.spec.Gates.MinDevicesReporting, base.members))
	baseOK := base.members > 0 && baseF.Devices >= need
	if baseOK {
		baseF.AtMs = r.in.NowMs
		r.st.Baseline = &baseF
	} else if r.st.Baseline != nil {
		baseF, baseOK = *r.st.Baseline, true
	}
	r.evals = evaluate(&r.spec.Gates, cur, curF, baseF, baseOK, failed, switched, from, to)
}
