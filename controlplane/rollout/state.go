package rollout

import (
	"maps"
)

// Phase is where a rollout is.
type Phase string

// Phases. Completed and RolledBack are terminal for the stages; a
// completed rollout still assigns devices that join its selector later.
const (
	PhaseRunning     Phase = "running"
	PhasePaused      Phase = "paused"
	PhaseRollingBack Phase = "rolling_back"
	PhaseRolledBack  Phase = "rolled_back"
	PhaseCompleted   Phase = "completed"
)

// DevicePhase is where one device is in a rollout.
type DevicePhase string

// Device phases. A device the rollout has not touched has none.
const (
	// DeviceIncompatible: its facts run no variant of the bundle
	// (preflight); checked again every pass, it is never assigned.
	DeviceIncompatible DevicePhase = "incompatible"
	// DeviceSkipped: it already runs the release, or a later one.
	DeviceSkipped DevicePhase = "skipped"
	// DeviceAssigned: the release was assigned; not yet committed.
	DeviceAssigned DevicePhase = "assigned"
	// DeviceCommitted: it reports the release active and healthy.
	DeviceCommitted DevicePhase = "committed"
	// DeviceFailed: it refused the release at its golden check, or rolled
	// it back on probation, by itself.
	DeviceFailed DevicePhase = "failed"
	// DeviceRollingBack: the scheduler sent it back.
	DeviceRollingBack DevicePhase = "rolling_back"
	// DeviceRolledBack: it reports its previous release (or the rollback
	// release) active again.
	DeviceRolledBack DevicePhase = "rolled_back"
	// DeviceStranded: it runs the release and cannot be sent back: the
	// release to go back to is a lower counter than it runs, which a device
	// never installs (set bundle.rollback_release to a re-release of the
	// previous version), or it ran no release before.
	DeviceStranded DevicePhase = "stranded"
)

// switched reports whether the rollout moved the device (or tried to).
func (p DevicePhase) switched() bool {
	return p == DeviceAssigned || p == DeviceCommitted || p == DeviceFailed
}

// State is a rollout's progress: everything the reconciler needs besides
// the spec and the world, and all it changes. It is plain data (JSON), so
// the store keeps it and a reloaded state continues exactly.
type State struct {
	ID    string `json:"id"`
	Phase Phase  `json:"phase"`
	// Stage is the index of the stage in progress (the last one once
	// completed).
	Stage          int   `json:"stage"`
	StageStartedMs int64 `json:"stage_started_ms"`
	// BakeStartedMs is when every device of the stage had committed; 0
	// until then.
	BakeStartedMs int64 `json:"bake_started_ms,omitempty"`
	// EvalFromMs bounds the summaries judged from below: the rollout's
	// creation, or the last resume (a resumed rollout is not paused again
	// on the summaries that paused it).
	EvalFromMs int64 `json:"eval_from_ms"`
	// Reason says why the rollout paused or rolled back.
	Reason string `json:"reason,omitempty"`
	// Baseline is the previous release's figures from the latest pass in
	// which enough of its devices reported; relative gates use it when
	// too few remain on the previous release (the last stage).
	Baseline *Figures `json:"baseline,omitempty"`
	// Devices holds every device the rollout touched, by ID.
	Devices map[string]*DeviceState `json:"devices"`
}

// DeviceState is one device's part in a rollout.
type DeviceState struct {
	Phase DevicePhase `json:"phase"`
	// Stage is the stage it was assigned in.
	Stage int `json:"stage"`
	// From is the release it ran when assigned (0: none).
	From uint64 `json:"from,omitempty"`
	// RollbacksAtAssign is its reported rollback count when assigned, so a
	// later increase is seen as its own rollback.
	RollbacksAtAssign uint64 `json:"rollbacks_at_assign,omitempty"`
	AssignedMs        int64  `json:"assigned_ms,omitempty"`
	CommittedMs       int64  `json:"committed_ms,omitempty"`
	FailedMs          int64  `json:"failed_ms,omitempty"`
	// RollbackTo is the release it was sent back to.
	RollbackTo   uint64 `json:"rollback_to,omitempty"`
	RollbackMs   int64  `json:"rollback_ms,omitempty"`
	RolledBackMs int64  `json:"rolled_back_ms,omitempty"`
	// RollbackAfterRevision is the device's desired revision when it was
	// sent back: the withdrawal is a later one, and only a report answering
	// a later one shows where the device went.
	RollbackAfterRevision uint64 `json:"rollback_after_revision,omitempty"`
	// Reason: why it is incompatible, skipped or failed.
	Reason string `json:"reason,omitempty"`
}

// NewState is the state of a rollout created at nowMs.
func NewState(id string, nowMs int64) State {
	return State{ID: id, Phase: PhaseRunning, StageStartedMs: nowMs, EvalFromMs: nowMs, Devices: map[string]*DeviceState{}}
}

// Clone returns a deep copy.
func (s State) Clone() State {
	out := s
	out.Devices = make(map[string]*DeviceState, len(s.Devices))
	for id, d := range s.Devices {
		c := *d
		out.Devices[id] = &c
	}
	if s.Baseline != nil {
		b := *s.Baseline
		out.Baseline = &b
	}
	return out
}

// Terminal reports whether the rollout's stages are over: completed or
// rolled back.
func (s State) Terminal() bool { return s.Phase == PhaseCompleted || s.Phase == PhaseRolledBack }

// Counts returns how many devices are in each phase.
func (s State) Counts() map[DevicePhase]int {
	out := map[DevicePhase]int{}
	for _, d := range s.Devices {
		out[d.Phase]++
	}
	return out
}

// Equal reports whether two states are the same.
func (s State) Equal(o State) bool {
	if s.ID != o.ID || s.Phase != o.Phase || s.Stage != o.Stage || s.StageStartedMs != o.StageStartedMs ||
		s.BakeStartedMs != o.BakeStartedMs || s.EvalFromMs != o.EvalFromMs || s.Reason != o.Reason {
		return false
	}
	if (s.Baseline == nil) != (o.Baseline == nil) || s.Baseline != nil && *s.Baseline != *o.Baseline {
		return false
	}
	return maps.EqualFunc(s.Devices, o.Devices, func(a, b *DeviceState) bool { return *a == *b })
}
