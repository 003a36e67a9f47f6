package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/flotilla-edge/flotilla/agent/state"
)

// activate takes the staged candidate through load, golden check and the
// switch. e.op is held.
func (l *Lifecycle) activate(ctx context.Context, e *entry) error {
	rec := e.rec
	cand := rec.Candidate
	rec.Attempts++
	if rec.Attempts > l.cfg.MaxAttempts {
		return l.dropCandidate(ctx, e, StepRejected,
			fmt.Sprintf("activation interrupted %d times (the agent died while loading or checking it)", rec.Attempts-1), true)
	}
	if err := l.save(ctx, e, rec, StepLoading, "info", fmt.Sprintf("%s release %d loading (attempt %d)", e.name, cand.Release, rec.Attempts)); err != nil {
		return err
	}
	ld, err := l.load(ctx, e.name, cand)
	if errors.Is(err, ErrRuntimeMissing) {
		return l.wait(ctx, e, err)
	}
	if err != nil {
		return l.dropCandidate(ctx, e, StepRejected, "load: "+err.Error(), true)
	}
	l.hook(StepLoaded)
	e.baselineCrashes(ld.rt)
	if err := l.golden(ctx, ld); err != nil {
		ld.close()
		return l.dropCandidate(ctx, e, StepRejected, err.Error(), true)
	}
	if err := l.save(ctx, e, e.rec, StepChecked, "info", fmt.Sprintf("%s release %d passed its golden check", e.name, cand.Release)); err != nil {
		ld.close()
		return err
	}
	return l.switchTo(ctx, e, ld)
}

// switchTo makes ld the active release in one durable step and starts its
// probation. e.op is held.
func (l *Lifecycle) switchTo(ctx context.Context, e *entry, ld *loaded) error {
	rec := e.rec
	prev := rec.Active
	rec.Previous = prev
	rec.Active = rec.Candidate
	rec.Candidate = state.ModelSlot{}
	rec.Phase = PhaseProbation
	rec.ProbationStart = time.Now()
	rec.Attempts = 0
	rec.Health = HealthProbation.String()
	msg := fmt.Sprintf("%s switched to release %d in slot %s (was %d); on probation", e.name, rec.Active.Release, rec.Active.Slot, prev.Release)
	if err := l.save(ctx, e, rec, StepSwitched, "info", msg); err != nil {
		ld.close()
		return err
	}
	e.loaded[ld.slot] = ld
	l.serve(e)
	l.startProbation(e)
	return nil
}

// serve points requests at the loaded active release (and the incumbent
// as shadow during a shadowed probation). e.op is held.
func (l *Lifecycle) serve(e *entry) {
	act := e.loaded[e.rec.Active.Slot]
	if e.rec.Active.Empty() || act == nil {
		e.cur.Store(nil)
		return
	}
	s := &serving{active: act}
	if e.rec.Phase == PhaseProbation && l.policy(act).Shadow {
		s.shadow = e.loaded[e.rec.Previous.Slot]
	}
	e.cur.Store(s)
}

// wait leaves the candidate staged until a runtime it needs is installed
// (Reload retries it): not rejected, since the device can run it once the
// plugin is there, and not counted as an interrupted attempt. e.op is
// held.
func (l *Lifecycle) wait(ctx context.Context, e *entry, why error) error {
	rec := e.rec
	rec.Attempts = 0
	rec.LastError = fmt.Sprintf("release %d waits for a runtime: %v", rec.Candidate.Release, why)
	if err := l.save(ctx, e, rec, StepStaged, "warn", fmt.Sprintf("%s release %d staged, waiting for a runtime: %v", e.name, rec.Candidate.Release, why)); err != nil {
		return err
	}
	return fmt.Errorf("%s release %d: %w", e.name, rec.Candidate.Release, why)
}

// retryWaiting runs the activation again of every release waiting for a
// runtime (a plugin was installed) and returns the models it switched.
func (l *Lifecycle) retryWaiting(ctx context.Context) []string {
	l.mu.Lock()
	var es []*entry
	for _, e := range l.models {
		es = append(es, e)
	}
	l.mu.Unlock()
	var done []string
	for _, e := range es {
		e.op.Lock()
		if e.rec.Phase == PhaseStaged && !e.rec.Candidate.Empty() {
			if err := l.activate(ctx, e); err == nil {
				done = append(done, e.name)
			} else if !errors.Is(err, ErrRuntimeMissing) {
				l.cfg.Logger.Warn("waiting release not activated", "model", e.name, "error", err)
			}
		}
		e.op.Unlock()
	}
	sort.Strings(done)
	return done
}

// dropCandidate forgets the staged candidate: rejected (remembered, with
// the reason) or superseded. e.op is held.
func (l *Lifecycle) dropCandidate(ctx context.Context, e *entry, step, reason string, reject bool) error {
	rec := e.rec
	cand := rec.Candidate
	rec.Candidate = state.ModelSlot{}
	rec.Phase = PhaseIdle
	rec.Attempts = 0
	level := "info"
	msg := fmt.Sprintf("%s release %d %s: %s", e.name, cand.Release, step, reason)
	if reject {
		rec.RejectedDigest, rec.RejectedRel, rec.RejectedReason = cand.Digest, cand.Release, reason
		rec.LastError = fmt.Sprintf("release %d rejected: %s", cand.Release, reason)
		level = "warn"
	}
	if err := l.save(ctx, e, rec, step, level, msg); err != nil {
		return err
	}
	l.removeSlot(e, cand.Slot)
	if reject {
		return fmt.Errorf("%w: %s release %d: %s", ErrRejected, e.name, cand.Release, reason)
	}
	return nil
}

// commit ends a probation that held: the previous release is unloaded and
// its slot collected. e.op is held.
func (l *Lifecycle) commit(ctx context.Context, e *entry) error {
	rec := e.rec
	prev := rec.Previous
	rec.Previous = state.ModelSlot{}
	rec.Phase = PhaseIdle
	rec.ProbationStart = time.Time{}
	rec.Health = HealthHealthy.String()
	rec.LastError = ""
	if err := l.save(ctx, e, rec, StepCommitted, "info", fmt.Sprintf("%s release %d committed", e.name, rec.Active.Release)); err != nil {
		return err
	}
	e.watchGen++
	l.serve(e)
	if !prev.Empty() && prev.Slot != rec.Active.Slot {
		l.removeSlot(e, prev.Slot)
		e.stats.Forget(prev.Release)
	}
	return nil
}

// rollback switches back to the previous release in one durable step.
// reject remembers the release rolled back from as rejected, counts the
// rollback and reports the reason; a superseded release is not rejected.
// e.op is held.
func (l *Lifecycle) rollback(ctx context.Context, e *entry, reason string, reject bool) error {
	rec := e.rec
	bad := rec.Active
	rec.Active = rec.Previous
	rec.Previous = state.ModelSlot{}
	rec.Phase = PhaseIdle
	rec.ProbationStart = time.Time{}
	rec.Attempts = 0
	rec.Health = HealthHealthy.String()
	step := StepSuperseded
	level := "info"
	if reject {
		step, level = StepRolledBack, "warn"
		rec.RejectedDigest, rec.RejectedRel, rec.RejectedReason = bad.Digest, bad.Release, reason
		rec.Rollbacks++
		rec.Health = HealthRolledBack.String()
		rec.LastError = fmt.Sprintf("release %d rolled back: %s", bad.Release, reason)
	}
	msg := fmt.Sprintf("%s rolled back from release %d to %d: %s", e.name, bad.Release, rec.Active.Release, reason)
	if err := l.save(ctx, e, rec, step, level, msg); err != nil {
		return err
	}
	if reject {
		e.stats.AddRollback()
	}
	e.watchGen++
	if !rec.Active.Empty() && e.loaded[rec.Active.Slot] == nil {
		if ld, err := l.load(ctx, e.name, rec.Active); err == nil {
			e.loaded[rec.Active.Slot] = ld
		} else {
			l.markUnhealthy(ctx, e, "previous release failed to load: "+err.Error())
		}
	}
	l.serve(e)
	l.removeSlot(e, bad.Slot)
	e.stats.Forget(bad.Release)
	return nil
}

// markUnhealthy records that the active release cannot serve. e.op is held.
func (l *Lifecycle) markUnhealthy(ctx context.Context, e *entry, reason string) {
	rec := e.rec
	rec.Health = HealthUnhealthy.String()
	rec.LastError = reason
	if err := l.cfg.Store.SaveModel(context.WithoutCancel(ctx), rec, state.Event{Level: "error", Code: "model.unhealthy",
		Message: e.name + ": " + reason}); err != nil {
		l.cfg.Logger.Error("journal", "model", e.name, "error", err)
	}
	e.setRec(rec)
	if l.cfg.Reporter != nil {
		l.cfg.Reporter.ModelChanged(stateOf(rec))
	}
}

// removeSlot unloads and deletes a slot no longer referenced. e.op is held.
func (l *Lifecycle) removeSlot(e *entry, slot string) {
	if slot == "" || slot == e.rec.Active.Slot || slot == e.rec.Previous.Slot || slot == e.rec.Candidate.Slot {
		return
	}
	if ld := e.loaded[slot]; ld != nil {
		ld.close()
		delete(e.loaded, slot)
	}
	if err := os.RemoveAll(l.slotDir(e.name, slot)); err != nil {
		l.cfg.Logger.Warn("removing slot", "model", e.name, "slot", slot, "error", err)
	}
}

// baselineCrashes starts counting rt's crashes from now for this model.
func (e *entry) baselineCrashes(rt interface{}) {
	if c, ok := rt.(crasher); ok {
		n := int64(c.Crashes())
		if n > e.crashSeen.Load() {
			e.crashSeen.Store(n)
		}
	}
}
