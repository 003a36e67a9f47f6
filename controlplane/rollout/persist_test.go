package rollout

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// A rollout saved and reloaded mid-stage (the control plane restarted)
// continues exactly as one that never stopped: the same decisions, tick
// by tick, to the same end.
func TestPersistedRolloutContinuesIdentically(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "db.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// Two identical fleets; the second saves every tick and is reloaded
	// from the store in the middle of stage 1.
	spec := mustSpec(t, simSpec)
	a := simFleet(t, spec, normal(good))
	b := simFleet(t, spec, normal(good))
	rec, err := Create(ctx, st, "r-1", "alice", []byte(simSpec), b.now)
	if err != nil {
		t.Fatal(err)
	}
	if !rec.State.Equal(a.state) {
		t.Fatal("created state differs")
	}
	reloaded := false
	for i := 0; i < 400 && !(a.state.Terminal() && a.settled()); i++ {
		ra, rb := a.tick(), b.tick()
		if err := rec.Save(ctx, st, rb.State, rb.Decisions, b.now); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(ra.Decisions, rb.Decisions) {
			t.Fatalf("tick %d: decisions differ\n%v\n%v", i, ra.Decisions, rb.Decisions)
		}
		if !reloaded && b.state.Stage == 1 && b.state.Counts()[DeviceAssigned] > 0 {
			// The control plane restarts: everything in memory is lost.
			rec, err = Load(ctx, st, "r-1")
			if err != nil {
				t.Fatal(err)
			}
			if !rec.State.Equal(b.state) {
				t.Fatalf("reloaded state differs:\n%+v\n%+v", rec.State, b.state)
			}
			if !reflect.DeepEqual(rec.Spec, spec) {
				t.Fatal("reloaded spec differs")
			}
			b.state = rec.State
			reloaded = true
		}
	}
	if !reloaded || a.state.Phase != PhaseCompleted || !a.state.Equal(b.state) {
		t.Fatalf("reloaded %v; a: %v; b: %v", reloaded, a, b)
	}
	final, err := Load(ctx, st, "r-1")
	if err != nil {
		t.Fatal(err)
	}
	if !final.State.Equal(a.state) || final.Row.Phase != string(PhaseCompleted) || final.Row.Stage != 2 {
		t.Fatalf("stored end state %+v", final.Row)
	}
	// Every decision is in the audit trail, oldest last.
	trail, err := st.ListAuditFor(ctx, AuditTarget("r-1"), 10000, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(trail) != len(b.log)+1 || trail[len(trail)-1].Action != "rollout.create" || trail[0].Action != "rollout.complete" {
		t.Fatalf("%d audit entries for %d decisions; newest %q", len(trail), len(b.log), trail[0].Action)
	}
	assigns := 0
	for _, e := range trail {
		if e.Action == "rollout.assign" {
			assigns++
			if e.Actor != Scheduler || !strings.HasPrefix(e.Detail, "assign dev-") {
				t.Fatalf("audit entry %+v", e)
			}
		}
	}
	if assigns != 90 {
		t.Fatalf("%d assignments audited, want 90", assigns)
	}

	// A second writer with a stale read loses.
	stale, _ := Load(ctx, st, "r-1")
	if err := rec.Save(ctx, st, rec.State, nil, b.now); err != nil {
		t.Fatal(err)
	}
	if err := stale.Save(ctx, st, stale.State, nil, b.now); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale save: %v, want ErrConflict", err)
	}
	if _, err := Create(ctx, st, "r-2", "alice", []byte("bundle: {model: digits}"), b.now); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("create with a bad spec: %v", err)
	}
}
