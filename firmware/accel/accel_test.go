package accel

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// fakeProbe stands in for a broken probe: one that panics or fails.
type fakeProbe struct {
	name  string
	panic bool
	err   error
}

func (f fakeProbe) Name() string { return f.name }
func (f fakeProbe) Probe(string) ([]*flotillapb.Accelerator, error) {
	if f.panic {
		panic("index out of range")
	}
	return nil, f.err
}

func TestRunKeepsGoingPastBrokenProbes(t *testing.T) {
	boom := errors.New("boom")
	probes := []Probe{fakeProbe{name: "panicky", panic: true}, Hailo{}, fakeProbe{name: "failing", err: boom}}
	got, err := Run("testdata/hailo8", probes)
	checkAccels(t, got, []*flotillapb.Accelerator{acc(KindHailo, "Hailo", "Hailo-8", "4.20.0", "/dev/hailo0")})
	if !errors.Is(err, boom) {
		t.Errorf("err = %v, want it to wrap the failing probe's", err)
	}
	var names []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var pe *ProbeError
		if !errors.As(e, &pe) {
			t.Fatalf("%v is not a *ProbeError", e)
		}
		names = append(names, pe.Probe)
	}
	if !slices.Equal(names, []string{"panicky", "failing"}) {
		t.Errorf("failed probes = %q", names)
	}
}

func TestDiscover(t *testing.T) {
	if runtime.GOOS != "linux" {
		got, err := Discover("testdata/h100")
		if len(got) != 0 || err != nil {
			t.Errorf("Discover on %s = %v, %v; want nothing", runtime.GOOS, got, err)
		}
		return
	}
	got, err := Discover("testdata/h100")
	if err != nil {
		t.Fatal(err)
	}
	checkAccels(t, got, probeCases[0].want)
	if k := Kinds(got); !slices.Equal(k, []string{KindCUDA}) {
		t.Errorf("Kinds = %q, want [cuda]", k)
	}

	// A malformed NVIDIA driver version: the GPU is reported but not usable,
	// the Hailo beside it is, and the error names the nvidia probe.
	got, err = Discover("testdata/mixed")
	var pe *ProbeError
	if !errors.As(err, &pe) || pe.Probe != "nvidia" || !errors.Is(err, ErrMalformed) {
		t.Errorf("err = %v, want a malformed nvidia ProbeError", err)
	}
	checkAccels(t, got, []*flotillapb.Accelerator{
		acc(KindCUDA, "NVIDIA", "NVIDIA RTX A2000 12GB", "", "/dev/nvidia0"),
		acc(KindHailo, "Hailo", "Hailo-8", "4.17.0", "/dev/hailo0"),
	})
	if k := Kinds(got); !slices.Equal(k, []string{KindHailo}) {
		t.Errorf("Kinds = %q, want [hailo]", k)
	}

	got, err = Discover(t.TempDir())
	if len(got) != 0 || err != nil {
		t.Errorf("Discover on an empty tree = %v, %v", got, err)
	}
}

func TestKinds(t *testing.T) {
	accels := []*flotillapb.Accelerator{
		acc(KindHailo, "Hailo", "Hailo-8", "4.20.0", "/dev/hailo1"),
		acc(KindCUDA, "NVIDIA", "Tesla T4", "535.104.05", ""),    // no node
		acc(KindRKNPU, "Rockchip", "RK3566 NPU", "", ""),         // no driver
		acc(KindCUDA, "NVIDIA", "NVIDIA L4", "", "/dev/nvidia0"), // no driver version
		acc(KindCoral, "Google", "Coral USB Accelerator", "", "/dev/bus/usb/002/003"),
		acc(KindHailo, "Hailo", "Hailo-8", "4.20.0", "/dev/hailo0"),
	}
	if got := Kinds(accels); !slices.Equal(got, []string{KindCoral, KindHailo}) {
		t.Errorf("Kinds = %q", got)
	}
	accels = append(accels, acc(KindCUDA, "NVIDIA", "NVIDIA L4", "550.54.14", "/dev/nvidia1"))
	if got := Kinds(accels); !slices.Equal(got, []string{KindCoral, KindCUDA, KindHailo}) {
		t.Errorf("Kinds = %q", got)
	}
	if got := Kinds(nil); len(got) != 0 {
		t.Errorf("Kinds(nil) = %q", got)
	}
}

func TestNodeMode(t *testing.T) {
	for _, tc := range []struct {
		mode os.FileMode
		live bool
		want bool
	}{
		{os.ModeDevice | os.ModeCharDevice | 0o666, true, true},
		{os.ModeDevice | os.ModeCharDevice | 0o666, false, true},
		{0o644, true, false}, // a stray regular file in the live /dev
		{0o644, false, true}, // a recorded tree's stand-in
		{os.ModeDir | 0o755, false, false},
		{os.ModeDevice | 0o660, true, false}, // a block device
	} {
		if got := nodeMode(tc.mode, tc.live); got != tc.want {
			t.Errorf("nodeMode(%v, live=%v) = %v", tc.mode, tc.live, got)
		}
	}
}

func TestIsNodeOnLiveRoot(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("uses /dev/null and absolute paths as a live root sees them")
	}
	if !isNode("/", "dev/null") {
		t.Error("/dev/null is not a node under root /")
	}
	f := filepath.Join(t.TempDir(), "nvidia0")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if isNode("/", f[1:]) {
		t.Errorf("regular file %s counts as a node under root /", f)
	}
	if !isNode(filepath.Dir(f), "nvidia0") {
		t.Errorf("regular file %s does not stand in for a node in a recorded tree", f)
	}
}
