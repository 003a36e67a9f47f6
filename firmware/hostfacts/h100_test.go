package hostfacts

import (
	"os"
	"runtime"
	"slices"
	"testing"

	"github.com/flotilla-edge/flotilla/firmware/accel"
)

// TestRecordedH100CPU parses the CPU and memory of the H100 recording: a
// Sapphire Rapids Xeon, whose AVX-512 FP16 and AMX flags decide variants.
func TestRecordedH100CPU(t *testing.T) {
	b, err := os.ReadFile("testdata/h100/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	got := ParseCPUInfo(b)
	want := []string{"amx", "amx-bf16", "amx-int8", "avx", "avx2", "avx512bf16", "avx512bw", "avx512f",
		"avx512fp16", "avx512vl", "avx512vnni", "avxvnni", "f16c", "fma", "sse4.1", "sse4.2"}
	if got.Model != "Intel(R) Xeon(R) Processor" || got.Cores != 16 || !slices.Equal(got.Features, want) {
		t.Errorf("got %+v\nwant features %q", got, want)
	}
	m, err := os.ReadFile("testdata/h100/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	if got := ParseMemTotal(m); got != 131981020*1024 {
		t.Errorf("MemTotal = %d", got)
	}
}

// TestDiscoverFillsAccelerators runs Discover on the NVIDIA recording, a
// tree without kernel or CPU files: the missing files are reported, and the
// GPU still reaches the facts.
func TestDiscoverFillsAccelerators(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("accelerator probes are linux only")
	}
	f, err := Discover("../accel/testdata/h100")
	if err == nil {
		t.Error("no error for a tree without /proc/cpuinfo")
	}
	if len(f.Accelerators) != 1 || f.Accelerators[0].GetModel() != "NVIDIA H100 80GB HBM3" ||
		f.Accelerators[0].GetDriverVersion() != "580.159.04" {
		t.Fatalf("accelerators = %v", f.Accelerators)
	}
	if k := accel.Kinds(f.Accelerators); !slices.Equal(k, []string{accel.KindCUDA}) {
		t.Errorf("Kinds = %q", k)
	}
	if f, err := Discover("testdata/x86"); err != nil || len(f.Accelerators) != 0 {
		t.Errorf("x86 tree: accelerators %v, err %v", f.Accelerators, err)
	}
}
