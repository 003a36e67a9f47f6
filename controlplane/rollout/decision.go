package rollout

import "fmt"

// DecisionKind says what a decision is.
type DecisionKind string

// Decision kinds. Assign and Rollback are carried out by an Assigner; the
// others change only the rollout's state and the audit log.
const (
	DecideAssign       DecisionKind = "assign"        // send Device the release
	DecideRollback     DecisionKind = "rollback"      // send Device back to Release
	DecideStranded     DecisionKind = "stranded"      // Device cannot be sent back: Reason
	DecideIncompatible DecisionKind = "incompatible"  // Device can run no variant (preflight)
	DecideSkip         DecisionKind = "skip"          // Device already runs the release or a later one
	DecideDeviceFailed DecisionKind = "device_failed" // Device refused or rolled back the release by itself
	DecideAdvance      DecisionKind = "advance"       // the rollout moved to Stage
	DecidePause        DecisionKind = "pause"         // paused: Reason (a breach: Breach)
	DecideResume       DecisionKind = "resume"        // an operator resumed
	DecideRollbackAll  DecisionKind = "rollback_all"  // every switched device goes back: Reason (Breach)
	DecideComplete     DecisionKind = "complete"      // the last stage passed its gates
	DecideRolledBack   DecisionKind = "rolled_back"   // every switched device reports its previous release
)

// Scheduler is the actor of the reconciler's own decisions.
const Scheduler = "scheduler"

// Decision is one thing the reconciler (or an operator action) decided.
type Decision struct {
	Kind    DecisionKind `json:"kind"`
	Actor   string       `json:"actor"`
	Device  string       `json:"device,omitempty"`
	Model   string       `json:"model,omitempty"`
	Release uint64       `json:"release,omitempty"`
	Stage   int          `json:"stage"`
	Reason  string       `json:"reason,omitempty"`
	// Breach is the gate evaluation a pause or rollback was decided on.
	Breach *Evaluation `json:"breach,omitempty"`
}

// String is the decision in one line, for audit entries and logs.
func (d Decision) String() string {
	s := string(d.Kind)
	if d.Device != "" {
		s += " " + d.Device
	}
	if d.Release != 0 {
		s += fmt.Sprintf(" %s release %d", d.Model, d.Release)
	}
	s += fmt.Sprintf(" (stage %d)", d.Stage)
	if d.Reason != "" {
		s += ": " + d.Reason
	}
	if d.Breach != nil {
		s += " — " + d.Breach.String()
	}
	return s
}
