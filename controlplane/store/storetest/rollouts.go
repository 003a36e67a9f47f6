package storetest

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testRollouts(t *testing.T, s *store.Store) {
	ctx := context.Background()
	r := store.Rollout{ID: "r-1", Name: "digits 7", Model: "digits", Release: 7, Spec: []byte("bundle: {model: digits, release: 7}\n"),
		Phase: "running", State: []byte(`{"phase":"running"}`), CreatedBy: "alice", CreatedAt: now}
	created, err := s.CreateRollout(ctx, r, store.AuditEntry{At: now, Actor: "alice", Action: "rollout.create", Target: "rollout/r-1", Detail: "digits 7"})
	must(t, err)
	if created.Version != 1 || created.UpdatedAt != now {
		t.Fatalf("created %+v", created)
	}
	got, err := s.Rollout(ctx, "r-1")
	must(t, err)
	if !reflect.DeepEqual(got, created) {
		t.Fatalf("read back\n got %+v\nwant %+v", got, created)
	}
	_, err = s.CreateRollout(ctx, r)
	wantErr(t, err, store.ErrConflict)
	_, err = s.Rollout(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)

	// Refused: nothing stored, audit included.
	for name, bad := range map[string]store.Rollout{
		"id":      {ID: "../x", Model: "m", Release: 1, Spec: []byte("x"), State: []byte("{}"), Phase: "running"},
		"release": {ID: "r-9", Model: "m", Release: 0, Spec: []byte("x"), State: []byte("{}"), Phase: "running"},
		"spec":    {ID: "r-9", Model: "m", Release: 1, Spec: make([]byte, store.MaxRolloutSpecBytes+1), State: []byte("{}"), Phase: "running"},
		"phase":   {ID: "r-9", Model: "m", Release: 1, Spec: []byte("x"), State: []byte("{}")},
	} {
		if _, err := s.CreateRollout(ctx, bad); !strings.Contains(fmt.Sprint(err), "invalid") {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}
	_, err = s.CreateRollout(ctx, store.Rollout{ID: "r-9", Model: "m", Release: 1, Spec: []byte("x"), State: []byte("{}"), Phase: "running"},
		store.AuditEntry{At: now})
	wantErr(t, err, store.ErrInvalid)
	_, err = s.Rollout(ctx, "r-9")
	wantErr(t, err, store.ErrNotFound)

	// Save: state, device rows and audit in one go; the version moves.
	devs := []store.RolloutDevice{
		{RolloutID: "r-1", DeviceID: "dev-002", Phase: "assigned", Stage: 0, FromRelease: 6, State: []byte(`{"phase":"assigned"}`), UpdatedAt: now + 1},
		{RolloutID: "r-1", DeviceID: "dev-001", Phase: "incompatible", State: []byte(`{"phase":"incompatible"}`), UpdatedAt: now + 1},
	}
	next := created
	next.Phase, next.Stage, next.State, next.UpdatedAt = "paused", 1, []byte(`{"phase":"paused"}`), now+1
	saved, err := s.SaveRollout(ctx, next, devs, nil, []store.AuditEntry{
		{At: now + 1, Actor: "scheduler", Action: "rollout.assign", Target: "rollout/r-1", Detail: "dev-002"},
		{At: now + 1, Actor: "scheduler", Action: "rollout.pause", Target: "rollout/r-1", Detail: "gate error_rate breached"},
	})
	must(t, err)
	if saved.Version != 2 {
		t.Fatalf("version %d after a save, want 2", saved.Version)
	}
	got, err = s.Rollout(ctx, "r-1")
	must(t, err)
	if !reflect.DeepEqual(got, saved) {
		t.Fatalf("after save\n got %+v\nwant %+v", got, saved)
	}
	rows, err := s.RolloutDevices(ctx, "r-1", "")
	must(t, err)
	if !reflect.DeepEqual(rows, []store.RolloutDevice{devs[1], devs[0]}) {
		t.Fatalf("device rows %+v", rows)
	}
	rows, err = s.RolloutDevices(ctx, "r-1", "assigned")
	must(t, err)
	if len(rows) != 1 || rows[0].DeviceID != "dev-002" {
		t.Fatalf("assigned rows %+v", rows)
	}

	// A writer holding the old version loses, and changes nothing.
	stale := next
	stale.Phase = "rolling_back"
	_, err = s.SaveRollout(ctx, stale, []store.RolloutDevice{{RolloutID: "r-1", DeviceID: "dev-003", Phase: "assigned", State: []byte("{}")}},
		[]string{"dev-001"}, []store.AuditEntry{{At: now + 2, Actor: "bob", Action: "rollout.abort", Target: "rollout/r-1"}})
	wantErr(t, err, store.ErrConflict)
	got, _ = s.Rollout(ctx, "r-1")
	rows, _ = s.RolloutDevices(ctx, "r-1", "")
	if got.Phase != "paused" || len(rows) != 2 {
		t.Fatalf("a conflicting save changed %+v, %d rows", got, len(rows))
	}
	// A row of another rollout, or an invalid one, is refused whole.
	_, err = s.SaveRollout(ctx, saved, []store.RolloutDevice{{RolloutID: "r-2", DeviceID: "dev-003", Phase: "assigned", State: []byte("{}")}}, nil, nil)
	wantErr(t, err, store.ErrInvalid)
	_, err = s.SaveRollout(ctx, saved, []store.RolloutDevice{{RolloutID: "r-1", DeviceID: "dev 3", Phase: "assigned", State: []byte("{}")}}, nil, nil)
	wantErr(t, err, store.ErrInvalid)
	_, err = s.SaveRollout(ctx, store.Rollout{ID: "r-404", Model: "m", Release: 1, Spec: []byte("x"), State: []byte("{}"), Phase: "running", Version: 1}, nil, nil, nil)
	wantErr(t, err, store.ErrNotFound)

	// Replacing a row updates it.
	devs[0].Phase, devs[0].State, devs[0].UpdatedAt = "committed", []byte(`{"phase":"committed"}`), now+3
	saved, err = s.SaveRollout(ctx, saved, devs[:1], []string{"dev-001"}, nil)
	must(t, err)
	rows, _ = s.RolloutDevices(ctx, "r-1", "")
	if len(rows) != 1 || !reflect.DeepEqual(rows[0], devs[0]) || saved.Version != 3 {
		t.Fatalf("replaced row and removed one: %+v, version %d", rows, saved.Version)
	}

	// Listing, newest first, filtered and paged.
	for i := 2; i <= 5; i++ {
		model := "digits"
		if i%2 == 1 {
			model = "mobilenet"
		}
		_, err := s.CreateRollout(ctx, store.Rollout{ID: fmt.Sprintf("r-%d", i), Model: model, Release: uint64(i), Spec: []byte("x"),
			State: []byte("{}"), Phase: "running", CreatedAt: now + int64(i)})
		must(t, err)
	}
	list, err := s.ListRollouts(ctx, store.RolloutFilter{})
	must(t, err)
	if ids := rolloutIDs(list); !reflect.DeepEqual(ids, []string{"r-5", "r-4", "r-3", "r-2", "r-1"}) {
		t.Fatalf("list %v", ids)
	}
	list, _ = s.ListRollouts(ctx, store.RolloutFilter{Model: "digits", Phase: "running"})
	if ids := rolloutIDs(list); !reflect.DeepEqual(ids, []string{"r-4", "r-2"}) {
		t.Fatalf("digits running %v", ids)
	}
	page, _ := s.ListRollouts(ctx, store.RolloutFilter{Limit: 2})
	rest, _ := s.ListRollouts(ctx, store.RolloutFilter{Before: &page[1]})
	if ids := rolloutIDs(append(page, rest...)); !reflect.DeepEqual(ids, []string{"r-5", "r-4", "r-3", "r-2", "r-1"}) {
		t.Fatalf("paged %v", ids)
	}

	// The rollout's audit trail.
	_, err = s.AppendAudit(ctx, store.AuditEntry{At: now, Actor: "alice", Action: "device.label", Target: "dev-001"})
	must(t, err)
	trail, err := s.ListAuditFor(ctx, "rollout/r-1", 0, 0)
	must(t, err)
	var actions []string
	for _, e := range trail {
		actions = append(actions, e.Action)
	}
	if !reflect.DeepEqual(actions, []string{"rollout.pause", "rollout.assign", "rollout.create"}) {
		t.Fatalf("trail %v", actions)
	}
	older, err := s.ListAuditFor(ctx, "rollout/r-1", 1, trail[0].ID)
	must(t, err)
	if len(older) != 1 || older[0].ID != trail[1].ID {
		t.Fatalf("paged trail %+v", older)
	}
	_, err = s.ListAuditFor(ctx, "", 0, 0)
	wantErr(t, err, store.ErrInvalid)
}

func rolloutIDs(rs []store.Rollout) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}
