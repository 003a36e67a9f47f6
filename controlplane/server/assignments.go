package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// assignment is what one device should run of one model.
type assignment struct {
	Model    string    `json:"model"`
	Release  uint64    `json:"release"`
	Target   string    `json:"target"`
	Digest   string    `json:"digest"`
	Revision uint64    `json:"revision"`  // the desired state last signed with it
	SignedAt time.Time `json:"signed_at"` // when
}

// assignments are the devices' assignments, in the store: replicas share
// them, and an assignment writes one row.
type assignments struct {
	st  *store.Store
	log *slog.Logger
}

// openAssignments opens the assignments over st. A release/assignments.json
// an earlier version kept (path) is imported once, into an empty table,
// and renamed to path+".imported".
func openAssignments(ctx context.Context, st *store.Store, path string, log *slog.Logger) (*assignments, error) {
	a := &assignments{st: st, log: log}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return a, nil
	}
	if err != nil {
		return nil, err
	}
	n, err := st.CountAssignments(ctx)
	if err != nil {
		return nil, err
	}
	if n > 0 {
		log.Warn("assignments file ignored: the database holds assignments", "file", path)
		return a, nil
	}
	var m map[string]map[string]assignment
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	count := 0
	for dev, ms := range m {
		for _, as := range ms {
			if err := a.set(ctx, dev, as); err != nil {
				return nil, fmt.Errorf("import %s: %w", path, err)
			}
			if !as.SignedAt.IsZero() {
				if err := st.MarkAssignmentsSigned(ctx, dev, as.Revision, as.SignedAt.UnixMilli()); err != nil {
					return nil, fmt.Errorf("import %s: %w", path, err)
				}
			}
			count++
		}
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return nil, err
	}
	log.Info("assignments imported into the database", "file", path, "assignments", count)
	return a, nil
}

func fromStore(s store.Assignment) assignment {
	a := assignment{Model: s.Model, Release: s.Release, Target: s.Target, Digest: s.Digest, Revision: s.Revision}
	if s.SignedAt != 0 {
		a.SignedAt = time.UnixMilli(s.SignedAt).UTC()
	}
	return a
}

// set assigns as to device, replacing its assignment of that model.
func (a *assignments) set(ctx context.Context, device string, as assignment) error {
	return a.st.SetAssignment(ctx, store.Assignment{DeviceID: device, Model: as.Model, Release: as.Release, Target: as.Target, Digest: as.Digest})
}

// remove withdraws device's assignment of model; it reports whether there
// was one.
func (a *assignments) remove(ctx context.Context, device, model string) (bool, error) {
	return a.st.RemoveAssignment(ctx, device, model)
}

// get is device's assignment of model; ok is false when it has none.
func (a *assignments) get(ctx context.Context, device, model string) (as assignment, ok bool, err error) {
	s, err := a.st.GetAssignment(ctx, device, model)
	if errors.Is(err, store.ErrNotFound) {
		return assignment{}, false, nil
	}
	if err != nil {
		return assignment{}, false, err
	}
	return fromStore(s), true, nil
}

// of lists device's assignments by model.
func (a *assignments) of(ctx context.Context, device string) ([]assignment, error) {
	ss, err := a.st.DeviceAssignments(ctx, device)
	if err != nil {
		return nil, err
	}
	out := make([]assignment, len(ss))
	for i, s := range ss {
		out[i] = fromStore(s)
	}
	return out, nil
}

// signed records that device's assignments were signed at revision rev.
func (a *assignments) signed(ctx context.Context, device string, rev uint64, at time.Time) error {
	return a.st.MarkAssignmentsSigned(ctx, device, rev, at.UnixMilli())
}

// offered is the Repairer's check: the device is assigned the bundle. A
// store that cannot answer refuses (the device asks again).
func (a *assignments) offered(device, digest string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := a.st.AssignedBundle(ctx, device, digest)
	if err != nil {
		a.log.Warn("repair refused: assignment unknown", "device", device, "err", err)
		return false
	}
	return ok
}

// digests lists the bundles any device is assigned.
func (a *assignments) digests(ctx context.Context) ([]string, error) {
	return a.st.AssignedDigests(ctx)
}

// stale lists devices whose director metadata was signed more than renew
// ago.
func (a *assignments) stale(ctx context.Context, now time.Time, renew time.Duration) ([]string, error) {
	return a.st.StaleAssignments(ctx, now.Add(-renew).UnixMilli())
}
