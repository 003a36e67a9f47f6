package store_test

import (
	"context"
	"maps"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// TestPhaseCounts: rollouts and a rollout's devices counted by phase, one
// rollout's devices not counted in another's; no devices counts zero.
func TestPhaseCounts(t *testing.T) {
	ctx := context.Background()
	s := openSQLite(t, filepath.Join(t.TempDir(), "db.sqlite"))
	for _, r := range []store.Rollout{
		{ID: "r-1", Model: "digits", Release: 1, Spec: []byte("x"), State: []byte("{}"), Phase: "running"},
		{ID: "r-2", Model: "digits", Release: 2, Spec: []byte("x"), State: []byte("{}"), Phase: "running"},
		{ID: "r-3", Model: "other", Release: 1, Spec: []byte("x"), State: []byte("{}"), Phase: "completed"},
	} {
		if _, err := s.CreateRollout(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	r1, err := s.Rollout(ctx, "r-1")
	if err != nil {
		t.Fatal(err)
	}
	dev := func(rollout, id, phase string) store.RolloutDevice {
		return store.RolloutDevice{RolloutID: rollout, DeviceID: id, Phase: phase, State: []byte("{}")}
	}
	if _, err := s.SaveRollout(ctx, r1, []store.RolloutDevice{dev("r-1", "d-1", "assigned"), dev("r-1", "d-2", "committed"),
		dev("r-1", "d-3", "committed")}, nil, nil); err != nil {
		t.Fatal(err)
	}
	r2, _ := s.Rollout(ctx, "r-2")
	if _, err := s.SaveRollout(ctx, r2, []store.RolloutDevice{dev("r-2", "d-4", "rolled_back")}, nil, nil); err != nil {
		t.Fatal(err)
	}

	phases, err := s.RolloutPhaseCounts(ctx)
	if err != nil || !maps.Equal(phases, map[string]int64{"running": 2, "completed": 1}) {
		t.Fatalf("rollout phases %v, %v", phases, err)
	}
	devs, err := s.RolloutDevicePhaseCounts(ctx, "r-1")
	if err != nil || !maps.Equal(devs, map[string]int64{"assigned": 1, "committed": 2}) {
		t.Fatalf("r-1 devices %v, %v", devs, err)
	}
	devs, err = s.RolloutDevicePhaseCounts(ctx, "r-3")
	if err != nil || len(devs) != 0 {
		t.Fatalf("r-3 devices %v, %v", devs, err)
	}
	total, online, err := s.DeviceCounts(ctx)
	if err != nil || total != 0 || online != 0 {
		t.Fatalf("device counts %d %d %v", total, online, err)
	}
}
