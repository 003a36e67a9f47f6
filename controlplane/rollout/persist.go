package rollout

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// Store is what a rollout needs of the control plane's store.
type Store interface {
	CreateRollout(ctx context.Context, r store.Rollout, audit ...store.AuditEntry) (store.Rollout, error)
	Rollout(ctx context.Context, id string) (store.Rollout, error)
	RolloutDevices(ctx context.Context, rolloutID, phase string) ([]store.RolloutDevice, error)
	SaveRollout(ctx context.Context, r store.Rollout, devices []store.RolloutDevice, remove []string, audit []store.AuditEntry) (store.Rollout, error)
}

// Record is a stored rollout: its spec, its state and the row they were
// read from (whose version a save must match).
type Record struct {
	Spec  *Spec
	State State
	Row   store.Rollout
}

// AuditTarget is the audit log target of a rollout's entries.
func AuditTarget(id string) string { return "rollout/" + id }

// Create parses specText and stores a new rollout id, created by actor at
// nowMs, with its audit entry.
func Create(ctx context.Context, st Store, id, actor string, specText []byte, nowMs int64) (*Record, error) {
	spec, err := Parse(specText)
	if err != nil {
		return nil, err
	}
	state := NewState(id, nowMs)
	raw, err := encodeState(state)
	if err != nil {
		return nil, err
	}
	row, err := st.CreateRollout(ctx, store.Rollout{ID: id, Name: spec.Name, Model: spec.Bundle.Model, Release: spec.Bundle.Release,
		Spec: specText, Phase: string(state.Phase), State: raw, CreatedBy: actor, CreatedAt: nowMs},
		store.AuditEntry{At: nowMs, Actor: actor, Action: "rollout.create", Target: AuditTarget(id),
			Detail: fmt.Sprintf("%s release %d, %d stages, failure policy %s", spec.Bundle.Model, spec.Bundle.Release, len(spec.Stages), spec.FailurePolicy)})
	if err != nil {
		return nil, err
	}
	return &Record{Spec: spec, State: state, Row: row}, nil
}

// Load reads a rollout and its devices back.
func Load(ctx context.Context, st Store, id string) (*Record, error) {
	row, err := st.Rollout(ctx, id)
	if err != nil {
		return nil, err
	}
	spec, err := Parse(row.Spec)
	if err != nil {
		return nil, fmt.Errorf("rollout %s: stored spec: %w", id, err)
	}
	var state State
	if err := json.Unmarshal(row.State, &state); err != nil {
		return nil, fmt.Errorf("rollout %s: stored state: %w", id, err)
	}
	rows, err := st.RolloutDevices(ctx, id, "")
	if err != nil {
		return nil, err
	}
	state.Devices = make(map[string]*DeviceState, len(rows))
	for _, r := range rows {
		var ds DeviceState
		if err := json.Unmarshal(r.State, &ds); err != nil {
			return nil, fmt.Errorf("rollout %s: device %s: %w", id, r.DeviceID, err)
		}
		state.Devices[r.DeviceID] = &ds
	}
	return &Record{Spec: spec, State: state, Row: row}, nil
}

// Save stores next as the rollout's state, with the device rows that
// changed since rec.State and one audit entry per decision, in one
// transaction; rec then holds next. Another writer having saved since rec
// was read fails it with store.ErrConflict (reload and reconcile again).
func (rec *Record) Save(ctx context.Context, st Store, next State, decisions []Decision, nowMs int64) error {
	raw, err := encodeState(next)
	if err != nil {
		return err
	}
	var rows []store.RolloutDevice
	for _, id := range sortedIDs(next.Devices) {
		ds := next.Devices[id]
		if old := rec.State.Devices[id]; old != nil && *old == *ds {
			continue
		}
		b, err := json.Marshal(ds)
		if err != nil {
			return err
		}
		rows = append(rows, store.RolloutDevice{RolloutID: next.ID, DeviceID: id, Phase: string(ds.Phase), Stage: ds.Stage,
			FromRelease: ds.From, State: b, UpdatedAt: nowMs})
	}
	var remove []string
	for _, id := range sortedIDs(rec.State.Devices) {
		if next.Devices[id] == nil {
			remove = append(remove, id)
		}
	}
	audit := make([]store.AuditEntry, 0, len(decisions))
	for _, d := range decisions {
		detail := d.String()
		if len(detail) > 8<<10 {
			detail = detail[:8<<10] + "…"
		}
		audit = append(audit, store.AuditEntry{At: nowMs, Actor: d.Actor, Action: "rollout." + string(d.Kind), Target: AuditTarget(next.ID), Detail: detail})
	}
	row := rec.Row
	row.Phase, row.Stage, row.State, row.UpdatedAt = string(next.Phase), next.Stage, raw, nowMs
	saved, err := st.SaveRollout(ctx, row, rows, remove, audit)
	if err != nil {
		return err
	}
	rec.Row, rec.State = saved, next.Clone()
	return nil
}

// encodeState is the rollout-level state as stored: devices are rows.
func encodeState(s State) ([]byte, error) {
	s.Devices = nil
	return json.Marshal(s)
}

func sortedIDs(m map[string]*DeviceState) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
