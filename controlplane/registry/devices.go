package registry

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// SetLabels changes a device's labels on behalf of actor and republishes
// its desired state. Invalid labels change nothing.
func (r *Registry) SetLabels(ctx context.Context, actor, id string, set map[string]string, remove []string) (store.Device, error) {
	d, err := r.cfg.Store.SetLabels(ctx, id, set, remove, r.nowMs())
	if err != nil {
		return store.Device{}, storeError(err)
	}
	r.audit(ctx, actor, "device.label", id, labelDiff(set, remove))
	r.publishDesired(ctx, id)
	return d, nil
}

// Decommission revokes a device on behalf of actor: its credentials stop
// working at once (live connections are dropped), its retained topics are
// cleared, and its ID is never reused.
func (r *Registry) Decommission(ctx context.Context, actor, id string) (store.Device, error) {
	d, err := r.cfg.Store.Decommission(ctx, id, r.nowMs())
	if err != nil {
		return store.Device{}, storeError(err)
	}
	if r.cfg.Credentials != nil {
		if err := r.cfg.Credentials.Revoke(ctx, id); err != nil {
			// The store already refuses the device; an external broker that
			// still knows it is retried by the operator's next attempt.
			r.log.Error("broker credentials not revoked", "device", id, "err", err)
			return d, fmt.Errorf("%w: revoke broker credentials: %w", ErrUnavailable, err)
		}
	}
	if r.cfg.Publisher != nil {
		for _, e := range topic.Table {
			if e.Scope == topic.PerDevice && e.Retained {
				if err := r.cfg.Publisher.Publish(ctx, r.cfg.Scheme.Device(e.Kind, id), 1, true, nil); err != nil {
					r.log.Warn("retained topic not cleared", "device", id, "topic", e.Kind, "err", err)
				}
			}
		}
	}
	r.audit(ctx, actor, "device.decommission", id, "")
	r.log.Info("device decommissioned", "device", id, "by", actor)
	return d, nil
}

func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case errors.Is(err, store.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	}
	return err
}

func labelDiff(set map[string]string, remove []string) string {
	var parts []string
	for k, v := range set {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	for _, k := range remove {
		parts = append(parts, "-"+k)
	}
	return strings.Join(parts, " ")
}

// audit records an action; a failure to record is logged loudly but does
// not undo the action.
func (r *Registry) audit(ctx context.Context, actor, action, target, detail string) {
	_, err := r.cfg.Store.AppendAudit(ctx, store.AuditEntry{At: r.nowMs(), Actor: actor, Action: action, Target: target, Detail: detail})
	if err != nil {
		r.log.Error("audit entry not written", "action", action, "target", target, "err", err)
	}
}
