//go:build gpu

package accel

import (
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestLiveNVIDIA checks the NVIDIA probe on this machine's real /proc and
// /dev against what nvidia-smi says. Run it where an NVIDIA GPU is at hand:
//
//	go test -tags gpu -run Live ./firmware/accel
//
// It is not part of CI (no GPU there): the recorded tree in testdata/h100
// covers the same code on every run.
func TestLiveNVIDIA(t *testing.T) {
	out, err := exec.Command("nvidia-smi", "--query-gpu=pci.bus_id,name,driver_version,memory.total",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		t.Fatalf("nvidia-smi: %v (this test needs an NVIDIA GPU)", err)
	}
	type smiGPU struct {
		name, driver string
		mem          uint64
	}
	want := map[string]smiGPU{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ", ")
		if len(f) != 4 {
			t.Fatalf("nvidia-smi line %q", line)
		}
		mib, err := strconv.ParseUint(f[3], 10, 64)
		if err != nil {
			t.Fatalf("nvidia-smi line %q: %v", line, err)
		}
		want[NormalizeBusID(f[0])] = smiGPU{f[1], f[2], mib << 20}
	}

	got, err := Run("/", []Probe{NVIDIA{SMI: "nvidia-smi"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("probe found %d GPUs %v, nvidia-smi %d", len(got), got, len(want))
	}
	for _, a := range got {
		t.Logf("found %v", a)
		if !Usable(a) {
			t.Errorf("%v not usable", a)
		}
		matched := false
		for _, w := range want {
			if a.Model == w.name && a.DriverVersion == w.driver && a.MemoryBytes == w.mem {
				matched = true
			}
		}
		if !matched {
			t.Errorf("%v matches nothing nvidia-smi reports: %v", a, want)
		}
	}
	if k := Kinds(got); len(k) != 1 || k[0] != KindCUDA {
		t.Errorf("Kinds = %q", k)
	}
	all, err := Discover("/")
	t.Logf("Discover(/) = %v, err %v", all, err)
	if err != nil || len(all) != len(want) {
		t.Errorf("Discover(/) = %v, %v", all, err)
	}
}
