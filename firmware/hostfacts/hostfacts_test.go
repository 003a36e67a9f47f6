package hostfacts

import (
	"runtime"
	"slices"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

func TestDiscoverRecordedTrees(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc trees: linux only")
	}
	tests := []struct {
		root string
		want *flotillapb.Facts
	}{
		{"testdata/x86", &flotillapb.Facts{
			Kernel: "6.8.0-45-generic", Hostname: "edge-x86-01",
			CpuModel:    "Intel(R) Xeon(R) Silver 4210R CPU @ 2.40GHz",
			CpuFeatures: []string{"avx", "avx2", "avx512bw", "avx512f", "avx512vl", "avx512vnni", "f16c", "fma", "sse4.1", "sse4.2"},
			CpuCores:    2, MemoryBytes: 16363708 * 1024,
		}},
		{"testdata/arm64", &flotillapb.Facts{
			Kernel: "6.6.31+rpt-rpi-v8", Hostname: "rpi4-lab-07",
			CpuModel:    "Raspberry Pi 4 Model B Rev 1.4",
			CpuFeatures: []string{"neon"},
			CpuCores:    4, MemoryBytes: 7998956 * 1024,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.root, func(t *testing.T) {
			got, err := Discover(tt.root)
			if err != nil {
				t.Fatal(err)
			}
			if got.Os != runtime.GOOS || got.Arch == "" {
				t.Errorf("os/arch = %q/%q", got.Os, got.Arch)
			}
			if got.Kernel != tt.want.Kernel || got.Hostname != tt.want.Hostname ||
				got.CpuModel != tt.want.CpuModel || got.CpuCores != tt.want.CpuCores ||
				got.MemoryBytes != tt.want.MemoryBytes || !slices.Equal(got.CpuFeatures, tt.want.CpuFeatures) {
				t.Errorf("got %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestDiscoverMissingTree(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("linux only")
	}
	f, err := Discover(t.TempDir())
	if err == nil {
		t.Error("no error for an empty tree")
	}
	if f == nil || f.Os == "" {
		t.Errorf("facts = %v, want os/arch at least", f)
	}
}

func TestArch(t *testing.T) {
	for _, tt := range []struct{ goarch, goarm, want string }{
		{"amd64", "", "amd64"},
		{"arm64", "", "arm64"},
		{"arm", "7", "arm/7"},
		{"arm", "6,softfloat", "arm/6"},
		{"arm", "", "arm"},
	} {
		if got := Arch(tt.goarch, tt.goarm); got != tt.want {
			t.Errorf("Arch(%q, %q) = %q, want %q", tt.goarch, tt.goarm, got, tt.want)
		}
	}
}

func TestParseCPUInfoARMv7(t *testing.T) {
	data := "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nFeatures\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm crc32\n\nHardware\t: BCM2835\n"
	got := ParseCPUInfo([]byte(data))
	if got.Model != "ARMv7 Processor rev 4 (v7l)" || got.Cores != 1 || !slices.Equal(got.Features, []string{"neon", "vfpv4"}) {
		t.Errorf("got %+v", got)
	}
}
