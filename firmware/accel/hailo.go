package accel

import (
	"errors"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Hailo finds Hailo PCIe accelerators (Hailo-8, Hailo-8L; the Raspberry Pi
// AI Kit and HAT+): /dev/hailoN nodes made by the hailo_pci driver, its
// version in /sys/module/hailo_pci/version, and the PCI vendor:device in
// /sys/class/hailo_chardev/hailoN/device_id for the model.
type Hailo struct{}

// Name implements Probe.
func (Hailo) Name() string { return "hailo" }

// hailoModels names the PCI IDs the driver reports. Hailo-8L shares the
// Hailo-8's ID.
var hailoModels = map[string]string{"1e60:2864": "Hailo-8"}

// Probe implements Probe.
func (Hailo) Probe(root string) ([]*flotillapb.Accelerator, error) {
	nodes, err := list(root, "dev", "hailo")
	if err != nil || len(nodes) == 0 {
		return nil, err
	}
	var errs []error
	v, err := version(root, "sys/module/hailo_pci/version")
	if err != nil {
		errs = append(errs, err)
	}
	var found []*flotillapb.Accelerator
	for _, n := range nodes {
		if !isNode(root, "dev/"+n) {
			continue
		}
		model := "Hailo"
		if b, ok, _ := readFile(root, "sys/class/hailo_chardev/"+n+"/device_id"); ok {
			id := strings.TrimSpace(string(b))
			model = cmpOr(hailoModels[id], "Hailo ("+clip(id)+")")
		}
		found = append(found, &flotillapb.Accelerator{
			Kind: KindHailo, Vendor: "Hailo", Model: model, DriverVersion: v, DevicePath: "/dev/" + n,
		})
	}
	return found, errors.Join(errs...)
}
