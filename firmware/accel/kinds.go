package accel

import (
	"slices"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Accelerator kinds, as Facts and bundle variants spell them.
const (
	KindCUDA     = "cuda"      // NVIDIA GPU with its kernel driver
	KindCoral    = "coral"     // Coral Edge TPU, PCIe (apex) or USB
	KindHailo    = "hailo"     // Hailo-8 and kin (hailo_pci)
	KindRKNPU    = "rknpu"     // Rockchip NPU with the vendor RKNPU driver
	KindIntelNPU = "intel-npu" // Intel NPU (intel_vpu, /dev/accel)
)

// Usable reports whether a bundle variant that needs a's kind can run on it:
// the device node is present (DevicePath set) and, for CUDA, the driver
// version is known, since the CUDA runtime needs the kernel driver loaded.
// An accelerator found without its node (an excluded GPU, an SoC whose NPU
// driver is not loaded, a device not passed into a container) is reported
// in Facts for operators but is not usable.
func Usable(a *flotillapb.Accelerator) bool {
	if a.GetDevicePath() == "" {
		return false
	}
	if a.GetKind() == KindCUDA && a.GetDriverVersion() == "" {
		return false
	}
	return true
}

// Kinds returns the sorted, distinct kinds of the usable accelerators: the
// names a bundle variant lists in its accelerators field. A device takes a
// variant whose accelerators are all in this list; "cpu" is never in it,
// since a variant that needs no accelerator lists none.
func Kinds(accels []*flotillapb.Accelerator) []string {
	var kinds []string
	for _, a := range accels {
		if Usable(a) && !slices.Contains(kinds, a.GetKind()) {
			kinds = append(kinds, a.GetKind())
		}
	}
	slices.Sort(kinds)
	return kinds
}
