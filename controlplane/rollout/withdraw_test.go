package rollout

import (
	"testing"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestAbortWaitsForTheWithdrawal: a canary aborted while only assigned
// still reports its previous release, from before it took in the
// withdrawal; it stays rolling back (and the rollout with it) until a
// report answers a later desired revision than the one it had when sent
// back. Without revisions (0) the earlier rule holds.
func TestAbortWaitsForTheWithdrawal(t *testing.T) {
	spec := mustSpec(t, simSpec)
	rel := spec.Bundle.Release
	st := NewState("r-1", 0)
	st.Devices["canary"] = &DeviceState{Phase: DeviceAssigned, From: rel - 1, AssignedMs: 0}
	st, _, err := Act(spec, st, ActionAbort, "op", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(active, desired, reported uint64) Device {
		return Device{ID: "canary", Labels: map[string]string{"role": "camera"}, Facts: facts("onnx", "wasm"), Online: true,
			Model:           &pb.ModelState{Name: "digits", ActiveRelease: active, Health: pb.ModelState_HEALTH_HEALTHY},
			DesiredRevision: desired, ReportedRevision: reported}
	}
	pass := func(st State, d Device, now int64) Result {
		return Reconcile(Input{Spec: spec, State: st, Manifest: manifest(rel), Devices: []Device{d}, NowMs: now})
	}
	// The abort's pass: the report answers revision 7, the assignment.
	r := pass(st, dev(rel-1, 7, 7), 1000)
	if ds := r.State.Devices["canary"]; ds.Phase != DeviceRollingBack || ds.RollbackAfterRevision != 7 || r.State.Phase != PhaseRollingBack {
		t.Fatalf("after the abort: rollout %s, canary %+v; want both rolling back, after revision 7", r.State.Phase, ds)
	}
	// The withdrawal (revision 8) is out, the report still answers 7.
	r = pass(r.State, dev(rel-1, 8, 7), 2000)
	if ds := r.State.Devices["canary"]; ds.Phase != DeviceRollingBack || r.State.Phase != PhaseRollingBack {
		t.Fatalf("on a report from before the withdrawal: rollout %s, canary %+v; want rolling back", r.State.Phase, ds)
	}
	// It answers the withdrawal on its previous release: rolled back.
	r = pass(r.State, dev(rel-1, 8, 8), 3000)
	if ds := r.State.Devices["canary"]; ds.Phase != DeviceRolledBack || ds.RolledBackMs != 3000 || r.State.Phase != PhaseRolledBack {
		t.Fatalf("on a report answering the withdrawal: rollout %s, canary %+v; want rolled back", r.State.Phase, ds)
	}
	// A caller that tracks no revisions keeps the earlier rule.
	r = pass(st, dev(rel-1, 0, 0), 1000)
	if r.State.Phase != PhaseRolledBack {
		t.Fatalf("without revisions: rollout %s, want rolled back at once", r.State.Phase)
	}
}
