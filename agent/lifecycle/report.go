package lifecycle

import (
	"github.com/flotilla-edge/flotilla/agent/state"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Health is a model's health as reported (flotilla.v1.ModelState.Health).
type Health int32

// The values match pb.ModelState_Health.
const (
	HealthUnspecified Health = Health(pb.ModelState_HEALTH_UNSPECIFIED)
	HealthHealthy     Health = Health(pb.ModelState_HEALTH_HEALTHY)
	HealthProbation   Health = Health(pb.ModelState_HEALTH_PROBATION)
	HealthUnhealthy   Health = Health(pb.ModelState_HEALTH_UNHEALTHY)
	HealthRolledBack  Health = Health(pb.ModelState_HEALTH_ROLLED_BACK)
)

var healthNames = map[Health]string{HealthHealthy: "healthy", HealthProbation: "probation",
	HealthUnhealthy: "unhealthy", HealthRolledBack: "rolled_back"}

func (h Health) String() string {
	if n, ok := healthNames[h]; ok {
		return n
	}
	return "unspecified"
}

func parseHealth(s string) Health {
	for h, n := range healthNames {
		if n == s {
			return h
		}
	}
	return HealthUnspecified
}

// State is one model's state as the agent reports it
// (flotilla.v1.ModelState), plus what is in flight.
type State struct {
	Name          string
	ActiveRelease uint64
	ActiveVersion string
	ActiveSlot    string // "a", "b"; empty before the first activation
	Health        Health
	LastError     string
	Rollbacks     uint64

	Phase            string // PhaseIdle, PhaseStaged, PhaseProbation
	CandidateRelease uint64 // staged, not yet switched to
	PreviousRelease  uint64 // the rollback target on probation
	RejectedRelease  uint64
	RejectedReason   string
}

// Proto is the state as the reported-state message carries it.
func (s State) Proto() *pb.ModelState {
	return &pb.ModelState{Name: s.Name, ActiveRelease: s.ActiveRelease, ActiveVersion: s.ActiveVersion,
		ActiveSlot: s.ActiveSlot, Health: pb.ModelState_Health(s.Health), LastError: s.LastError, Rollbacks: s.Rollbacks}
}

func stateOf(r state.ModelRecord) State {
	return State{Name: r.Name, ActiveRelease: r.Active.Release, ActiveVersion: r.Active.Version, ActiveSlot: r.Active.Slot,
		Health: parseHealth(r.Health), LastError: r.LastError, Rollbacks: r.Rollbacks, Phase: r.Phase,
		CandidateRelease: r.Candidate.Release, PreviousRelease: r.Previous.Release,
		RejectedRelease: r.RejectedRel, RejectedReason: r.RejectedReason}
}

// States returns every model's state, sorted by name.
func (l *Lifecycle) States() []State {
	var out []State
	for _, n := range l.Names() {
		if s, ok := l.State(n); ok {
			out = append(out, s)
		}
	}
	return out
}

// State returns one model's state.
func (l *Lifecycle) State(name string) (State, bool) {
	e, err := l.entry(name, false)
	if err != nil {
		return State{}, false
	}
	return *e.snap.Load(), true
}
