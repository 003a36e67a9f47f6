package rollout

import (
	"context"
	"errors"
	"fmt"
)

// Assigner carries out the reconciler's assignments: the server implements
// it with its bundle delivery (the director signs the release into the
// device's desired state, after checking that the release repository —
// the keys the devices trust — lists it).
type Assigner interface {
	// Assign sends device the model's release.
	Assign(ctx context.Context, device, model string, release uint64) error
	// Rollback sends device back to the model's release: the release it ran
	// before (0: withdraw the assignment) or the spec's rollback release.
	Rollback(ctx context.Context, device, model string, release uint64) error
}

// Execute carries out the assign and rollback decisions in order. An
// assignment that fails is undone in st, so the device is eligible again
// on the next pass (and counts against neither the stage nor the rate
// limit); a rollback that fails is left pending, and Retry sends it again.
// The errors of every failed decision are joined.
func Execute(ctx context.Context, a Assigner, st *State, ds []Decision) error {
	var errs []error
	for _, d := range ds {
		switch d.Kind {
		case DecideAssign:
			if err := a.Assign(ctx, d.Device, d.Model, d.Release); err != nil {
				if cur := st.Devices[d.Device]; cur != nil && cur.Phase == DeviceAssigned {
					delete(st.Devices, d.Device)
				}
				errs = append(errs, fmt.Errorf("assign %s: %w", d.Device, err))
			}
		case DecideRollback:
			if err := a.Rollback(ctx, d.Device, d.Model, d.Release); err != nil {
				errs = append(errs, fmt.Errorf("roll back %s: %w", d.Device, err))
			}
		}
	}
	return errors.Join(errs...)
}

// Retry sends again the rollbacks still pending in st that were sent
// before sinceMs: the watcher calls it now and then, so a rollback lost to
// a failed call or an unreachable device is not lost for good.
func Retry(ctx context.Context, a Assigner, spec *Spec, st State, sinceMs int64) error {
	var errs []error
	for _, id := range Order(st.ID, deviceIDs(st)) {
		ds := st.Devices[id]
		if ds.Phase == DeviceRollingBack && ds.RollbackMs < sinceMs {
			if err := a.Rollback(ctx, id, spec.Bundle.Model, ds.RollbackTo); err != nil {
				errs = append(errs, fmt.Errorf("roll back %s: %w", id, err))
			}
		}
	}
	return errors.Join(errs...)
}

func deviceIDs(st State) []string {
	ids := make([]string, 0, len(st.Devices))
	for id := range st.Devices {
		ids = append(ids, id)
	}
	return ids
}
