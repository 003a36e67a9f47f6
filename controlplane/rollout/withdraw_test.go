package rollout

import (
	"fmt"
	"maps"
	"strings"
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

// TestUnreportedDevicesWait: a device whose state the caller does not know
// (a restarted control plane that lost its report) is neither assigned
// nor re-sorted: one skipped for running the release stays skipped, an
// untouched one is not assigned (nor counted in the stage's share) until
// it reports.
func TestUnreportedDevicesWait(t *testing.T) {
	spec := mustSpec(t, simSpec)
	rel := spec.Bundle.Release
	st := NewState("r-1", 0)
	st.Devices["skipped"] = &DeviceState{Phase: DeviceSkipped, Reason: "already runs release 2"}
	dev := func(id string, m *pb.ModelState, unreported bool) Device {
		return Device{ID: id, Labels: map[string]string{"role": "camera"}, Facts: facts("onnx", "wasm"), Online: true, Model: m, Unreported: unreported}
	}
	in := Input{Spec: spec, State: st, Manifest: manifest(rel), NowMs: 1000,
		Devices: []Device{dev("skipped", nil, true), dev("fresh", nil, true)}}
	r := Reconcile(in)
	if len(r.Decisions) != 0 || len(r.State.Devices) != 1 || r.State.Devices["skipped"].Phase != DeviceSkipped {
		t.Fatalf("unreported devices: decisions %v, devices %v; want nothing decided, the skipped one kept", r.Decisions, r.State.Devices)
	}
	// Once they report, they are sorted and assigned by what they run.
	in.Devices = []Device{dev("skipped", &pb.ModelState{Name: "digits", ActiveRelease: rel}, false),
		dev("fresh", &pb.ModelState{Name: "digits", ActiveRelease: rel - 1}, false)}
	r = Reconcile(in)
	if ds := r.State.Devices["fresh"]; ds == nil || ds.Phase != DeviceAssigned || ds.From != rel-1 {
		t.Fatalf("after reporting: fresh %+v (decisions %v)", ds, r.Decisions)
	}
	if ds := r.State.Devices["skipped"]; ds.Phase != DeviceSkipped {
		t.Fatalf("after reporting: skipped %+v", ds)
	}
}

// TestRefusalInTheInstallersWords: the agent reports a golden-check
// refusal after what its installer says ("staged in slot b; activation:
// …; release N rejected: …"); the device is failed on it, and a refusal of
// another release (17, not 7) is not taken for this one's.
func TestRefusalInTheInstallersWords(t *testing.T) {
	spec := mustSpec(t, simSpec)
	rel := spec.Bundle.Release
	for le, failed := range map[string]bool{
		fmt.Sprintf("staged in slot b; activation: lifecycle: release rejected: digits release %d: golden check; release %d rejected: golden check", rel, rel): true,
		fmt.Sprintf("release %d rolled back: crashes", rel):             true,
		fmt.Sprintf("staged in slot b; release %d rejected: x", rel+10): false,
		"": false,
	} {
		st := NewState("r-1", 0)
		st.Devices["d"] = &DeviceState{Phase: DeviceAssigned, From: rel - 1}
		r := Reconcile(Input{Spec: spec, State: st, Manifest: manifest(rel), NowMs: 1000, Devices: []Device{{ID: "d",
			Labels: map[string]string{"role": "camera"}, Facts: facts("onnx", "wasm"), Online: true,
			Model: &pb.ModelState{Name: "digits", ActiveRelease: rel - 1, StagedRelease: rel, LastError: le}}}})
		got := false
		for _, d := range r.Decisions {
			got = got || d.Kind == DecideDeviceFailed && d.Device == "d"
		}
		if got != failed {
			t.Errorf("last error %q: failed %v, want %v (decisions %v)", le, got, failed, r.Decisions)
		}
	}
}

// TestSendBackWithoutRollbackRelease: with no bundle.rollback_release an
// abort sends each switched device back to the release it ran when first
// assigned — to a re-release of it above the rollout's release when the
// device already runs the new one (it never installs the lower counter),
// withdrawing the assignment when it ran none — and lists stranded only a
// device on the new release with nowhere above it to go.
func TestSendBackWithoutRollbackRelease(t *testing.T) {
	spec := mustSpec(t, strings.Replace(simSpec, ", rollback_release: 8", "", 1))
	rel := spec.Bundle.Release
	if spec.Bundle.RollbackRelease != 0 {
		t.Fatal("spec still names a rollback release")
	}
	st := NewState("r-1", 0)
	st.Devices["committed"] = &DeviceState{Phase: DeviceCommitted, From: rel - 1}
	st.Devices["refused"] = &DeviceState{Phase: DeviceFailed, From: rel - 1}
	st.Devices["fresh"] = &DeviceState{Phase: DeviceAssigned}
	st.Devices["stuck"] = &DeviceState{Phase: DeviceCommitted, From: rel - 2}
	st, _, err := Act(spec, st, ActionAbort, "op", "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	dev := func(id string, active uint64) Device {
		return Device{ID: id, Labels: map[string]string{"role": "camera"}, Facts: facts("onnx", "wasm"), Online: true,
			Model: &pb.ModelState{Name: "digits", ActiveRelease: active, Health: pb.ModelState_HEALTH_HEALTHY}}
	}
	r := Reconcile(Input{Spec: spec, State: st, Manifest: manifest(rel), NowMs: 1000, Rereleases: map[uint64]uint64{rel - 1: rel + 2},
		Devices: []Device{dev("committed", rel), dev("refused", rel-1), dev("fresh", 0), dev("stuck", rel)}})
	sent := map[string]uint64{}
	for _, d := range r.Decisions {
		if d.Kind == DecideRollback {
			sent[d.Device] = d.Release
		}
	}
	want := map[string]uint64{"committed": rel + 2, "refused": rel - 1, "fresh": 0}
	if !maps.Equal(sent, want) {
		t.Errorf("sent back to %v, want %v", sent, want)
	}
	for id, ph := range map[string]DevicePhase{"committed": DeviceRollingBack, "refused": DeviceRolledBack, "fresh": DeviceRolledBack, "stuck": DeviceStranded} {
		if got := r.State.Devices[id].Phase; got != ph {
			t.Errorf("%s: %s, want %s", id, got, ph)
		}
	}
	// The committed device takes the re-release: the rollout is rolled back.
	r = Reconcile(Input{Spec: spec, State: r.State, Manifest: manifest(rel), NowMs: 2000, Rereleases: map[uint64]uint64{rel - 1: rel + 2},
		Devices: []Device{dev("committed", rel+2), dev("refused", rel-1), dev("fresh", 0), dev("stuck", rel)}})
	if r.State.Phase != PhaseRolledBack || r.State.Devices["committed"].Phase != DeviceRolledBack {
		t.Errorf("after the re-release is active: %s, committed %+v", r.State.Phase, r.State.Devices["committed"])
	}
	// A re-release at or below the rollout's release is no way back.
	if got := SendBackTo(spec, &DeviceState{From: rel - 1}, &pb.ModelState{ActiveRelease: rel}, map[uint64]uint64{rel - 1: rel}); got != rel-1 {
		t.Errorf("with a re-release not above the release: sent to %d, want %d", got, rel-1)
	}
}
