package rollout

import (
	"context"
	"errors"
	"strings"
	"testing"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// refusing fails the assignments and rollbacks of the devices it names.
type refusing struct {
	*fleet
	refuse map[string]bool
	calls  []string
}

func (r *refusing) Assign(ctx context.Context, device, model string, rel uint64) error {
	r.calls = append(r.calls, "assign "+device)
	if r.refuse[device] {
		return errors.New("release not in the release repository")
	}
	return r.fleet.Assign(ctx, device, model, rel)
}

func (r *refusing) Rollback(ctx context.Context, device, model string, rel uint64) error {
	r.calls = append(r.calls, "rollback "+device)
	if r.refuse[device] {
		return errors.New("broker down")
	}
	return r.fleet.Rollback(ctx, device, model, rel)
}

// A failed assignment is undone: the device is eligible again and does
// not count against the stage; a failed rollback stays pending for Retry.
func TestExecuteUndoesFailedAssignments(t *testing.T) {
	spec := mustSpec(t, "bundle: {model: digits, release: 7, rollback_release: 8}\nstages: [{count: 3}]\n")
	f := newFleet(t, spec, 10, 6, normal(good))
	res := Reconcile(f.input())
	if len(res.Decisions) != 3 {
		t.Fatalf("decisions %v", res.Decisions)
	}
	bad := res.Decisions[1].Device
	a := &refusing{fleet: f, refuse: map[string]bool{bad: true}}
	err := Execute(context.Background(), a, &res.State, res.Decisions)
	if err == nil || !strings.Contains(err.Error(), "assign "+bad) {
		t.Fatalf("execute: %v", err)
	}
	if res.State.Devices[bad] != nil || res.State.Devices[res.Decisions[0].Device] == nil {
		t.Fatalf("state after a failed assignment: %v", res.State.Devices)
	}
	f.state = res.State
	a.refuse = nil
	next := Reconcile(f.input())
	if len(next.Decisions) != 1 || next.Decisions[0].Device != bad || next.Decisions[0].Kind != DecideAssign {
		t.Fatalf("the undone device is not assigned again first: %v", next.Decisions)
	}
	if err := Execute(context.Background(), a, &next.State, next.Decisions); err != nil {
		t.Fatal(err)
	}
	f.state = next.State

	// Abort; one rollback fails, Retry sends it again.
	st, _, err := Act(spec, f.state, ActionAbort, "alice", "", f.now)
	if err != nil {
		t.Fatal(err)
	}
	f.state = st
	rb := Reconcile(f.input())
	a.refuse = map[string]bool{bad: true}
	if err := Execute(context.Background(), a, &rb.State, rb.Decisions); err == nil {
		t.Fatal("a failed rollback was not reported")
	}
	if rb.State.Devices[bad].Phase != DeviceRollingBack && rb.State.Devices[bad].Phase != DeviceRolledBack {
		t.Fatalf("%s is %s", bad, rb.State.Devices[bad].Phase)
	}
	a.refuse, a.calls = nil, nil
	if err := Retry(context.Background(), a, spec, rb.State, f.now+1); err != nil {
		t.Fatal(err)
	}
	for _, c := range a.calls {
		if !strings.HasPrefix(c, "rollback ") {
			t.Fatalf("retry called %v", a.calls)
		}
	}
	if n := rb.State.Counts()[DeviceRollingBack]; len(a.calls) != n {
		t.Fatalf("retried %d, %d pending", len(a.calls), n)
	}
}

func TestPreflight(t *testing.T) {
	m := &pb.BundleManifest{Variants: []*pb.RuntimeVariant{
		{Runtime: "onnx", Accelerators: []string{"cuda"}},
		{Runtime: "native", Platforms: []string{"linux/arm"}},
	}}
	gpu := facts("onnx")
	gpu.Accelerators = []*pb.Accelerator{{Kind: "cuda"}}
	arm7 := facts("native")
	arm7.Arch = "arm/7"
	for _, tc := range []struct {
		name string
		f    *pb.Facts
		want string
	}{
		{"gpu", gpu, ""},
		{"arm via its base architecture", arm7, ""},
		{"no accelerator", facts("onnx"), "variant 0 (onnx): accelerator cuda absent; variant 1 (native): runtime native unavailable"},
		{"wrong platform", facts("native"), "variant 1 (native): not built for linux/arm64"},
		{"no facts", nil, "no facts reported yet"},
	} {
		if got := Preflight(m, tc.f); tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := Preflight(&pb.BundleManifest{}, gpu); got != "the bundle has no runtime variant" {
		t.Errorf("no variants: %q", got)
	}
	sel := Selector{Labels: map[string]string{"role": "camera"}, Arch: []string{"arm64"}, Accelerators: []string{"cuda"}, Runtimes: []string{"onnx"}}
	if !sel.Matches(map[string]string{"role": "camera", "x": "y"}, gpu) {
		t.Error("selector does not match a device it selects")
	}
	if sel.Matches(map[string]string{"role": "camera"}, facts("onnx")) || sel.Matches(map[string]string{"role": "gw"}, gpu) || sel.Matches(map[string]string{"role": "camera"}, nil) {
		t.Error("selector matches a device it must not")
	}
}
