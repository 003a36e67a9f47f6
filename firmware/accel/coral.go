package accel

import (
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Coral finds Google Coral Edge TPUs. PCIe and M.2 modules appear as
// /dev/apex_N once the gasket/apex driver is loaded (its version in
// /sys/module/apex/version). USB Accelerators need no kernel driver
// (libedgetpu talks libusb): they are found in /sys/bus/usb/devices by their
// IDs, 1a6e:089a before the runtime loads their firmware and 18d1:9302
// after, and their node is /dev/bus/usb/BBB/DDD.
type Coral struct{}

// Name implements Probe.
func (Coral) Name() string { return "coral" }

// coralUSB lists the vendor:product pairs of a USB Accelerator.
var coralUSB = map[string]bool{"1a6e:089a": true, "18d1:9302": true}

// Probe implements Probe.
func (Coral) Probe(root string) ([]*flotillapb.Accelerator, error) {
	var errs []error
	var found []*flotillapb.Accelerator
	nodes, err := list(root, "dev", "apex_")
	if err != nil {
		errs = append(errs, err)
	}
	if len(nodes) > 0 {
		v, err := version(root, "sys/module/apex/version")
		if err != nil {
			errs = append(errs, err)
		}
		for _, n := range nodes {
			if !isNode(root, "dev/"+n) {
				continue
			}
			found = append(found, &flotillapb.Accelerator{
				Kind: KindCoral, Vendor: "Google", Model: "Coral Edge TPU (PCIe)",
				DriverVersion: v, DevicePath: "/dev/" + n,
			})
		}
	}
	usb, err := coralUSBDevices(root)
	if err != nil {
		errs = append(errs, err)
	}
	return append(found, usb...), errors.Join(errs...)
}

func coralUSBDevices(root string) ([]*flotillapb.Accelerator, error) {
	const dir = "sys/bus/usb/devices"
	names, err := list(root, dir, "")
	if err != nil {
		return nil, err
	}
	var errs []error
	var found []*flotillapb.Accelerator
	for _, name := range names {
		if strings.Contains(name, ":") {
			continue // an interface (1-1:1.0), not a device
		}
		d := path.Join(dir, name)
		vendor, _, _ := readFile(root, d+"/idVendor")
		product, _, _ := readFile(root, d+"/idProduct")
		id := strings.TrimSpace(string(vendor)) + ":" + strings.TrimSpace(string(product))
		if !coralUSB[id] {
			continue
		}
		a := &flotillapb.Accelerator{Kind: KindCoral, Vendor: "Google", Model: "Coral USB Accelerator"}
		bus, err1 := sysfsUint(root, d+"/busnum")
		dev, err2 := sysfsUint(root, d+"/devnum")
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, err)
		} else if node := fmt.Sprintf("dev/bus/usb/%03d/%03d", bus, dev); isNode(root, node) {
			a.DevicePath = "/" + node
		}
		found = append(found, a)
	}
	return found, errors.Join(errs...)
}

// sysfsUint reads a sysfs file holding one decimal number.
func sysfsUint(root, rel string) (uint64, error) {
	b, ok, err := readFile(root, rel)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("/%s missing", rel)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("/%s: %w number %q", rel, ErrMalformed, clip(strings.TrimSpace(string(b))))
	}
	return n, nil
}
