package accel

import (
	"errors"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// IntelNPU finds Intel NPUs (Meteor Lake and later Core Ultra): a
// /dev/accel/accelN node whose /sys/class/accel/accelN/device/driver link
// points to intel_vpu. Other accel drivers (Habana, AMD XDNA, Rockchip
// rocket) use the same class and are skipped. The driver version comes from
// /sys/module/intel_vpu/version; the model from the PCI device ID.
type IntelNPU struct{}

// Name implements Probe.
func (IntelNPU) Name() string { return "intel-npu" }

// intelNPUModels maps PCI device IDs (ivpu_drv.c, linux-npu-driver) to the
// platform.
var intelNPUModels = map[string]string{
	"0x7d1d": "Intel NPU (Meteor Lake)",
	"0xad1d": "Intel NPU (Arrow Lake)",
	"0x643e": "Intel NPU (Lunar Lake)",
	"0xb03e": "Intel NPU (Panther Lake)",
}

// Probe implements Probe.
func (IntelNPU) Probe(root string) ([]*flotillapb.Accelerator, error) {
	nodes, err := list(root, "dev/accel", "accel")
	if err != nil || len(nodes) == 0 {
		return nil, err
	}
	var errs []error
	var found []*flotillapb.Accelerator
	var v string
	for _, n := range nodes {
		dev := "sys/class/accel/" + n + "/device"
		if linkBase(root, dev+"/driver") != "intel_vpu" || !isNode(root, "dev/accel/"+n) {
			continue
		}
		if found == nil {
			if v, err = version(root, "sys/module/intel_vpu/version"); err != nil {
				errs = append(errs, err)
			}
		}
		model := "Intel NPU"
		if b, ok, _ := readFile(root, dev+"/device"); ok {
			id := strings.ToLower(strings.TrimSpace(string(b)))
			model = cmpOr(intelNPUModels[id], "Intel NPU ("+clip(id)+")")
		}
		found = append(found, &flotillapb.Accelerator{
			Kind: KindIntelNPU, Vendor: "Intel", Model: model, DriverVersion: v, DevicePath: "/dev/accel/" + n,
		})
	}
	return found, errors.Join(errs...)
}
