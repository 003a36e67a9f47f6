package rollout

import (
	"errors"
	"fmt"
)

// Action is an operator's command to a rollout.
type Action string

// Operator actions.
const (
	// ActionPause stops assignments and stage advances; devices keep
	// what they run.
	ActionPause Action = "pause"
	// ActionResume continues a paused rollout. Summaries and device
	// failures from before the resume are no longer judged, so the breach
	// that paused it does not pause it again by itself.
	ActionResume Action = "resume"
	// ActionPromote advances to the next stage now, skipping the rest of
	// the stage's bake and its gates (completing after the last stage); a
	// paused rollout runs again.
	ActionPromote Action = "promote"
	// ActionAbort rolls back every device the rollout switched.
	ActionAbort Action = "abort"
)

// ErrAction is returned for an action the rollout's phase does not allow.
var ErrAction = errors.New("action not allowed")

// Act applies an operator's action to a rollout state at nowMs: the next
// state and what was decided, for the audit log. Like Reconcile it is pure;
// run Reconcile after it to carry the action out (an abort's rollbacks, a
// promotion's assignments).
func Act(spec *Spec, st State, a Action, actor, why string, nowMs int64) (State, Decision, error) {
	next := st.Clone()
	d := Decision{Actor: actor, Stage: st.Stage, Reason: why}
	deny := func() (State, Decision, error) {
		return st, Decision{}, fmt.Errorf("%w: cannot %s a rollout that is %s", ErrAction, a, st.Phase)
	}
	if actor == "" {
		return st, Decision{}, fmt.Errorf("%w: an action needs an actor", ErrAction)
	}
	switch a {
	case ActionPause:
		if st.Phase != PhaseRunning {
			return deny()
		}
		next.Phase = PhasePaused
		next.Reason = "paused by " + actor
		if why != "" {
			next.Reason += ": " + why
		}
		d.Kind = DecidePause
	case ActionResume:
		if st.Phase != PhasePaused {
			return deny()
		}
		next.Phase, next.Reason, next.EvalFromMs = PhaseRunning, "", nowMs
		d.Kind = DecideResume
	case ActionPromote:
		if st.Phase != PhaseRunning && st.Phase != PhasePaused {
			return deny()
		}
		if st.Phase == PhasePaused {
			next.EvalFromMs = nowMs
		}
		next.Phase, next.Reason = PhaseRunning, ""
		d = advance(spec, &next, nowMs, actor, why)
	case ActionAbort:
		if st.Phase != PhaseRunning && st.Phase != PhasePaused && st.Phase != PhaseCompleted {
			return deny()
		}
		next.Phase = PhaseRollingBack
		next.Reason = "aborted by " + actor
		if why != "" {
			next.Reason += ": " + why
		}
		d.Kind = DecideRollbackAll
	default:
		return st, Decision{}, fmt.Errorf("%w: unknown action %q (pause, resume, promote, abort)", ErrAction, a)
	}
	return next, d, nil
}
