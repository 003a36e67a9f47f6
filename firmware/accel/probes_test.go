package accel

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"google.golang.org/protobuf/proto"
)

// acc builds an expected Accelerator.
func acc(kind, vendor, model, driver, dev string) *flotillapb.Accelerator {
	return &flotillapb.Accelerator{Kind: kind, Vendor: vendor, Model: model, DriverVersion: driver, DevicePath: dev}
}

// probeCases are the recorded and hand-made trees, one or more per kind:
// present, partly usable, and malformed (a clear error, with whatever could
// still be read).
var probeCases = []struct {
	probe   Probe
	root    string
	want    []*flotillapb.Accelerator
	wantErr string // substring; "" = no error
}{
	{NVIDIA{}, "testdata/h100", []*flotillapb.Accelerator{
		acc(KindCUDA, "NVIDIA", "NVIDIA H100 80GB HBM3", "580.159.04", "/dev/nvidia0"),
	}, ""},
	{NVIDIA{}, "testdata/nvidia-2gpu", []*flotillapb.Accelerator{
		acc(KindCUDA, "NVIDIA", "NVIDIA GeForce RTX 3060", "535.104.05", "/dev/nvidia0"),
		acc(KindCUDA, "NVIDIA", "Tesla T4", "535.104.05", ""), // node not passed in
	}, ""},
	{NVIDIA{}, "testdata/nvidia-malformed", []*flotillapb.Accelerator{
		acc(KindCUDA, "NVIDIA", "NVIDIA L4", "550.54.14", "/dev/nvidia1"),
	}, "/proc/driver/nvidia/gpus/0000:01:00.0/information: malformed: no Model line"},
	{NVIDIA{}, "testdata/nvidia-procversion-malformed", []*flotillapb.Accelerator{
		acc(KindCUDA, "NVIDIA", "NVIDIA H100 80GB HBM3", "580.159.04", "/dev/nvidia0"), // from /sys/module
	}, "/proc/driver/nvidia/version: malformed: no version number"},
	{Coral{}, "testdata/coral-pcie", []*flotillapb.Accelerator{
		acc(KindCoral, "Google", "Coral Edge TPU (PCIe)", "1.2", "/dev/apex_0"),
		acc(KindCoral, "Google", "Coral Edge TPU (PCIe)", "1.2", "/dev/apex_1"),
	}, ""},
	{Coral{}, "testdata/coral-usb", []*flotillapb.Accelerator{
		acc(KindCoral, "Google", "Coral USB Accelerator", "", ""), // 1-1.2: node not passed in
		acc(KindCoral, "Google", "Coral USB Accelerator", "", "/dev/bus/usb/002/003"),
	}, ""},
	{Coral{}, "testdata/coral-usb-malformed", []*flotillapb.Accelerator{
		acc(KindCoral, "Google", "Coral USB Accelerator", "", ""),
	}, `/sys/bus/usb/devices/2-1/devnum: malformed number "three"`},
	{Hailo{}, "testdata/hailo8", []*flotillapb.Accelerator{
		acc(KindHailo, "Hailo", "Hailo-8", "4.20.0", "/dev/hailo0"),
	}, ""},
	{Hailo{}, "testdata/hailo-malformed", []*flotillapb.Accelerator{
		acc(KindHailo, "Hailo", "Hailo", "", "/dev/hailo0"),
	}, "/sys/module/hailo_pci/version: malformed version"},
	{Rockchip{}, "testdata/rk3588", []*flotillapb.Accelerator{
		acc(KindRKNPU, "Rockchip", "RK3588 NPU", "0.9.6", "/dev/dri/renderD129"),
	}, ""},
	{Rockchip{}, "testdata/rk3566-nodriver", []*flotillapb.Accelerator{
		acc(KindRKNPU, "Rockchip", "RK3566 NPU", "", ""),
	}, ""},
	{Rockchip{}, "testdata/rk3588-malformed", []*flotillapb.Accelerator{
		acc(KindRKNPU, "Rockchip", "RK3588S NPU", "", "/dev/rknpu"),
	}, `/proc/rknpu/version: malformed: version line "RKNPU drvier v?"`},
	{IntelNPU{}, "testdata/intel-npu-mtl", []*flotillapb.Accelerator{
		acc(KindIntelNPU, "Intel", "Intel NPU (Meteor Lake)", "1.0.", "/dev/accel/accel0"),
	}, ""},
	{IntelNPU{}, "testdata/intel-npu-malformed", []*flotillapb.Accelerator{
		acc(KindIntelNPU, "Intel", "Intel NPU", "", "/dev/accel/accel0"),
	}, "/sys/module/intel_vpu/version: malformed version"},
}

func TestProbes(t *testing.T) {
	for _, tc := range probeCases {
		t.Run(tc.probe.Name()+"/"+strings.TrimPrefix(tc.root, "testdata/"), func(t *testing.T) {
			got, err := tc.probe.Probe(tc.root)
			checkErr(t, err, tc.wantErr)
			checkAccels(t, got, tc.want)
		})
	}
}

// TestProbesFindNothingElsewhere runs every probe on every tree that is not
// its kind's, and on an empty tree: nothing found, and no error.
func TestProbesFindNothingElsewhere(t *testing.T) {
	probes := []Probe{NVIDIA{}, Coral{}, Hailo{}, Rockchip{}, IntelNPU{}}
	roots := []string{t.TempDir()}
	for _, tc := range probeCases {
		roots = append(roots, tc.root)
	}
	for _, p := range probes {
		for i, root := range roots {
			if i > 0 && probeCases[i-1].probe.Name() == p.Name() {
				continue
			}
			got, err := p.Probe(root)
			if len(got) != 0 || err != nil {
				t.Errorf("%s on %s: %v, %v; want nothing", p.Name(), root, got, err)
			}
		}
	}
}

// TestProbeUnreadableFile gives the Hailo probe a version "file" it cannot
// read (a folder: unlike a mode-000 file, root cannot read it either).
func TestProbeUnreadableFile(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "dev/hailo0", "")
	writeFile(t, root, "sys/module/hailo_pci/version/x", "")
	got, err := Hailo{}.Probe(root)
	if err == nil || !strings.Contains(err.Error(), "read /sys/module/hailo_pci/version: ") || strings.Contains(err.Error(), root) {
		t.Errorf("err = %v, want a read error naming the file as the device sees it", err)
	}
	checkAccels(t, got, []*flotillapb.Accelerator{acc(KindHailo, "Hailo", "Hailo", "", "/dev/hailo0")})
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Errorf("error %q, want it to contain %q", err, want)
	case want != "" && strings.Contains(want, "malformed") && !errors.Is(err, ErrMalformed):
		t.Errorf("error %v is not ErrMalformed", err)
	}
}

func checkAccels(t *testing.T, got, want []*flotillapb.Accelerator) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d accelerators %v, want %d %v", len(got), got, len(want), want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Errorf("[%d] = %v\nwant %v", i, got[i], want[i])
		}
	}
}

func writeFile(t *testing.T, root, rel, data string) {
	t.Helper()
	p := root + "/" + rel
	if err := os.MkdirAll(p[:strings.LastIndex(p, "/")], 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}
