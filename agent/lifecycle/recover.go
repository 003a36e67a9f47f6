package lifecycle

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// recover brings one model back after a start: whatever step was in
// flight is resumed or reverted.
//
//   - idle: load the active release.
//   - staged (killed while loading or checking the candidate): load the
//     active release, then run the activation again from the load; after
//     MaxAttempts interrupted tries the candidate is rejected.
//   - probation (killed after the switch): load the active release (the
//     candidate) and the previous one, and resume judging with the
//     original start time. If the candidate no longer loads, roll back.
func (l *Lifecycle) recover(ctx context.Context, e *entry) {
	e.op.Lock()
	defer e.op.Unlock()
	rec := e.rec
	if !rec.Active.Empty() {
		ld, err := l.load(ctx, e.name, rec.Active)
		switch {
		case err == nil:
			e.loaded[ld.slot] = ld
			e.baselineCrashes(ld.rt)
		case rec.Phase == PhaseProbation:
			l.cfg.Logger.Error("release on probation fails to load after a restart", "model", e.name, "error", err)
		default:
			l.markUnhealthy(ctx, e, fmt.Sprintf("release %d failed to load: %v", rec.Active.Release, err))
		}
	}
	if rec.Phase == PhaseProbation && !rec.Previous.Empty() {
		if ld, err := l.load(ctx, e.name, rec.Previous); err == nil {
			e.loaded[ld.slot] = ld
		} else {
			l.cfg.Logger.Error("previous release fails to load", "model", e.name, "error", err)
		}
	}
	switch rec.Phase {
	case PhaseProbation:
		if e.loaded[rec.Active.Slot] == nil {
			if err := l.rollback(ctx, e, "release on probation failed to load after a restart", true); err != nil {
				l.cfg.Logger.Error("rollback", "model", e.name, "error", err)
			}
			return
		}
		l.serve(e)
		l.startProbation(e)
	case PhaseStaged:
		l.serve(e)
		if err := l.activate(ctx, e); err != nil {
			l.cfg.Logger.Warn("resumed activation failed", "model", e.name, "error", err)
		}
	default:
		l.serve(e)
	}
	if err := l.save(ctx, e, e.rec, StepRecovered, "info", fmt.Sprintf("%s recovered in phase %s, active release %d", e.name, e.rec.Phase, e.rec.Active.Release)); err != nil {
		l.cfg.Logger.Error("journal", "model", e.name, "error", err)
	}
}

// collectStrays removes whatever under Dir no record references: slots
// of rejected or superseded releases a crash left behind, unpack
// leftovers, folders of forgotten models.
func (l *Lifecycle) collectStrays() error {
	tops, err := os.ReadDir(l.cfg.Dir)
	if err != nil {
		return err
	}
	var errs []string
	for _, top := range tops {
		e := l.models[top.Name()]
		dir := filepath.Join(l.cfg.Dir, top.Name())
		if e == nil || !top.IsDir() {
			if err := os.RemoveAll(dir); err != nil {
				errs = append(errs, err.Error())
			}
			continue
		}
		subs, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		for _, s := range subs {
			n := s.Name()
			if s.IsDir() && n != "" && (n == e.rec.Active.Slot || n == e.rec.Previous.Slot || n == e.rec.Candidate.Slot) {
				continue
			}
			if err := os.RemoveAll(filepath.Join(dir, n)); err != nil {
				errs = append(errs, err.Error())
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// checkQuota fails when the referenced slots plus extra bytes (and the
// slot at dir, if it already holds something) are over the quota.
func (l *Lifecycle) checkQuota(dir string, extra int64) error {
	if l.cfg.QuotaBytes <= 0 {
		return nil
	}
	used, err := dirSize(l.cfg.Dir)
	if err != nil {
		return fmt.Errorf("lifecycle: measuring slots: %w", err)
	}
	if used+extra > l.cfg.QuotaBytes {
		return fmt.Errorf("%w: slots use %d bytes, %d more needed, quota %d", ErrQuota, used, extra, l.cfg.QuotaBytes)
	}
	return nil
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// Reload loads again the active release of every idle model that serves
// nothing because its release failed to load (its runtime plugin was
// missing at start, say), and activates every staged release that waited
// for a runtime (ErrRuntimeMissing); it returns how many models it loaded
// or switched. The agent calls it when a runtime plugin appears.
func (l *Lifecycle) Reload(ctx context.Context) int {
	n := 0
	for _, name := range l.Names() {
		e, err := l.entry(name, false)
		if err != nil {
			continue
		}
		if l.reload(ctx, e) {
			n++
		}
	}
	return n + len(l.retryWaiting(ctx))
}

func (l *Lifecycle) reload(ctx context.Context, e *entry) bool {
	e.op.Lock()
	defer e.op.Unlock()
	if e.rec.Phase != PhaseIdle || e.rec.Active.Empty() || e.cur.Load() != nil {
		return false
	}
	ld, err := l.load(ctx, e.name, e.rec.Active)
	if err != nil {
		l.cfg.Logger.Debug("active release still fails to load", "model", e.name, "error", err)
		return false
	}
	e.loaded[ld.slot] = ld
	e.baselineCrashes(ld.rt)
	rec := e.rec
	rec.Health, rec.LastError = HealthHealthy.String(), ""
	l.serve(e)
	if err := l.save(ctx, e, rec, StepRecovered, "info", fmt.Sprintf("%s release %d loaded again", e.name, rec.Active.Release)); err != nil {
		l.cfg.Logger.Error("journal", "model", e.name, "error", err)
	}
	return true
}
