package lifecycle

import (
	"context"
	"errors"
	"fmt"
)

// ErrNoPrevious is returned by Rollback when the model has no release to
// go back to: the previous slot is kept only while the active release is
// on probation.
var ErrNoPrevious = errors.New("lifecycle: no previous release to roll back to")

// Rollback switches model name back to its previous release at once, the
// way a probation breach does: one durable step, journaled as
// model.rolledback with reason, counted, reported, and the release rolled
// back from remembered as rejected so a retained desired state does not
// install it again. It is for a person on site (agent/diag). Only a model
// on probation has a previous release (ErrNoPrevious otherwise).
func (l *Lifecycle) Rollback(ctx context.Context, name, reason string) (State, error) {
	e, err := l.entry(name, false)
	if err != nil {
		return State{}, err
	}
	e.op.Lock()
	defer e.op.Unlock()
	if e.rec.Phase != PhaseProbation || e.rec.Previous.Empty() {
		return stateOf(e.rec), fmt.Errorf("%w: %s is %s on release %d (the previous release is kept only during probation)",
			ErrNoPrevious, name, e.rec.Phase, e.rec.Active.Release)
	}
	if err := l.rollback(ctx, e, reason, true); err != nil {
		return stateOf(e.rec), err
	}
	return stateOf(e.rec), nil
}

// GoldenResult is the outcome of a golden check run on demand.
type GoldenResult struct {
	Release uint64
	Version string
	Runtime string
	// HasGolden is false when the release's manifest carries no golden
	// check: nothing was run.
	HasGolden bool
	// Err is why the check failed; nil when it passed (or there was none).
	Err error
}

// CheckGolden runs the golden check of model name's active release now,
// outside the request counters, and returns its outcome. The error is
// for a model that serves nothing; a failing check is in the result.
func (l *Lifecycle) CheckGolden(ctx context.Context, name string) (GoldenResult, error) {
	e, err := l.entry(name, false)
	if err != nil {
		return GoldenResult{}, err
	}
	for range 3 { // a switch may close the release between Load and acquire
		s := e.cur.Load()
		if s == nil {
			return GoldenResult{}, fmt.Errorf("%w: %q has no active release", ErrNotFound, name)
		}
		a := s.active
		if !a.acquire() {
			continue
		}
		res := GoldenResult{Release: a.release, Version: a.version, Runtime: a.rt.Name(), HasGolden: a.manifest.GetGolden() != nil}
		res.Err = l.golden(ctx, a)
		a.release_()
		return res, nil
	}
	return GoldenResult{}, fmt.Errorf("%w: %q is switching releases", ErrClosed, name)
}
