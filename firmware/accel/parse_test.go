package accel

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestParseNvidiaVersion(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (nixbld@)  \nGCC version:  gcc version 15.3.0 (GCC) \n", "580.159.04"},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n", "535.104.05"},
		{"NVRM version: NVIDIA UNIX x86_64 Kernel Module  470.57.02  Tue Jul 13 16:14:05 UTC 2021\n", "470.57.02"},
		{"NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  550.54.14  Release Build\n", "550.54.14"},
		{"NVRM version: NVIDIA UNIX Kernel Module (version unknown)\n", ""},
		{"GCC version:  gcc version 12.2.0\n", ""},
		{"", ""},
	} {
		got, err := ParseNvidiaVersion([]byte(tc.in))
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrMalformed) {
			t.Errorf("ParseNvidiaVersion(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseNvidiaInformation(t *testing.T) {
	b, err := os.ReadFile("testdata/h100/proc/driver/nvidia/gpus/0000:00:06.0/information")
	if err != nil {
		t.Fatal(err)
	}
	g, err := ParseNvidiaInformation(b)
	want := NvidiaGPU{
		Model: "NVIDIA H100 80GB HBM3", UUID: "GPU-310f59c2-7746-11a6-8258-4eced7aef8b3",
		BusLocation: "0000:00:06.0", DeviceMinor: 0, Firmware: "580.159.04", VideoBIOS: "96.00.cf.00.01",
	}
	if err != nil || g != want {
		t.Errorf("got %+v, %v\nwant %+v", g, err, want)
	}
	for _, bad := range []string{"IRQ: 41\n", "Model: X\n", "Model: X\nDevice Minor: ?\n", "Model: X\nDevice Minor: -1\n"} {
		if _, err := ParseNvidiaInformation([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseNvidiaInformation(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
	g, err = ParseNvidiaInformation([]byte("Model: X\nDevice Minor: 3\nGPU Excluded:\t Yes\n"))
	if err != nil || !g.Excluded || g.DeviceMinor != 3 {
		t.Errorf("excluded GPU: %+v, %v", g, err)
	}
}

func TestParseNvidiaSMIMemory(t *testing.T) {
	recorded, err := os.ReadFile("testdata/h100-nvidia-smi.csv") // with units, other columns
	if err != nil {
		t.Fatal(err)
	}
	mem, err := ParseNvidiaSMIMemory(recorded)
	if err != nil || mem["0000:00:06.0"] != 81559<<20 || len(mem) != 1 {
		t.Errorf("recorded: %v, %v", mem, err)
	}
	mem, err = ParseNvidiaSMIMemory([]byte("pci.bus_id, memory.total [MiB]\n00000000:01:00.0, 12288\n00000000:0A:00.0, 15360\n"))
	if err != nil || mem["0000:01:00.0"] != 12288<<20 || mem["0000:0a:00.0"] != 15360<<20 {
		t.Errorf("two GPUs: %v, %v", mem, err)
	}
	for _, bad := range []string{"", "name, driver_version\nX, 1\n", "pci.bus_id, memory.total [MiB]\n00000000:01:00.0, [N/A]\n", "pci.bus_id, memory.total\n1, 2, 3\n"} {
		if _, err := ParseNvidiaSMIMemory([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseNvidiaSMIMemory(%q) err = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestNormalizeBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:00:06.0": "0000:00:06.0",
		"00000009:0A:00.0": "0009:0a:00.0",
		"0000:00:06.0":     "0000:00:06.0",
		"junk":             "junk",
	} {
		if got := NormalizeBusID(in); got != want {
			t.Errorf("NormalizeBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNvidiaSMIOption runs a fake nvidia-smi (a shell script: the real one
// needs an NVIDIA driver) and checks the memory reaches the facts, and that
// a failing one is reported without losing the GPU.
func TestNvidiaSMIOption(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("shell script")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake-nvidia-smi")
	script := "#!/bin/sh\n[ \"$1\" = --query-gpu=pci.bus_id,memory.total ] || exit 9\ncat <<'E'\npci.bus_id, memory.total [MiB]\n00000000:00:06.0, 81559 MiB\nE\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := NVIDIA{SMI: fake}.Probe("testdata/h100")
	if err != nil || len(got) != 1 || got[0].MemoryBytes != 81559<<20 {
		t.Fatalf("got %v, %v; want 81559 MiB", got, err)
	}

	broken := filepath.Join(dir, "broken-nvidia-smi")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err = NVIDIA{SMI: broken}.Probe("testdata/h100")
	if err == nil || !strings.Contains(err.Error(), "NVIDIA-SMI has failed") || len(got) != 1 || got[0].MemoryBytes != 0 {
		t.Errorf("broken nvidia-smi: %v, %v", got, err)
	}
}

func TestParseRKNPUVersion(t *testing.T) {
	for in, want := range map[string]string{
		"RKNPU driver: v0.9.8\n": "0.9.8",
		"RKNPU driver: v0.8.2":   "0.8.2",
		"RKNPU driver: vX\n":     "",
		"rknpu 0.9.8\n":          "",
		"":                       "",
	} {
		got, err := ParseRKNPUVersion([]byte(in))
		if got != want || (want == "") != errors.Is(err, ErrMalformed) {
			t.Errorf("ParseRKNPUVersion(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
