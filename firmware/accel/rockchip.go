package accel

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Rockchip finds the NPU of Rockchip SoCs run by the vendor RKNPU driver
// (the one RKNN Toolkit's librknnrt needs). A documented heuristic, since
// the driver publishes no class of its own:
//
//   - driver version: "RKNPU driver: v0.9.8" in /proc/rknpu/version (when
//     the kernel has CONFIG_ROCKCHIP_RKNPU_PROC_FS) or
//     /sys/kernel/debug/rknpu/version (root only; unreadable is not an
//     error), else /sys/module/rknpu/version;
//   - device node: /dev/dri/renderD* whose /sys/class/drm/renderD*/device/
//     driver link is RKNPU (DRM GEM builds, the usual), else /dev/rknpu
//     (DMA-heap builds);
//   - model: the SoC from /proc/device-tree/compatible ("rockchip,rk3588"),
//     among those with an RKNPU2-class NPU.
//
// An NPU SoC without driver or node is still reported, without device path,
// so operators see the missing driver; Usable is false for it. The mainline
// "rocket" accel driver (Linux 6.18+) serves Mesa's Teflon, not librknnrt,
// and is not reported here.
type Rockchip struct{}

// Name implements Probe.
func (Rockchip) Name() string { return "rockchip" }

// rknpuSoCs lists the SoCs with an NPU the RKNPU driver runs.
var rknpuSoCs = map[string]bool{
	"rk3588": true, "rk3588s": true, "rk3576": true, "rk3568": true, "rk3566": true,
	"rk3562": true, "rv1103": true, "rv1106": true,
}

// Probe implements Probe.
func (Rockchip) Probe(root string) ([]*flotillapb.Accelerator, error) {
	var errs []error
	soc, err := rockchipSoC(root)
	if err != nil {
		errs = append(errs, err)
	}
	v, err := rknpuVersion(root)
	if err != nil {
		errs = append(errs, err)
	}
	node, err := rknpuNode(root)
	if err != nil {
		errs = append(errs, err)
	}
	if soc == "" && v == "" && node == "" {
		return nil, errors.Join(errs...)
	}
	model := "Rockchip NPU"
	if soc != "" {
		model = strings.ToUpper(soc) + " NPU"
	}
	return []*flotillapb.Accelerator{{
		Kind: KindRKNPU, Vendor: "Rockchip", Model: model, DriverVersion: v, DevicePath: node,
	}}, errors.Join(errs...)
}

// rockchipSoC returns the NPU SoC named in the device tree's compatible
// list (NUL-separated strings), or "".
func rockchipSoC(root string) (string, error) {
	b, ok, err := readFile(root, "proc/device-tree/compatible")
	if err != nil || !ok {
		return "", err
	}
	for _, c := range bytes.Split(b, []byte{0}) {
		if soc, ok := strings.CutPrefix(string(c), "rockchip,"); ok && rknpuSoCs[soc] {
			return soc, nil
		}
	}
	return "", nil
}

func rknpuVersion(root string) (string, error) {
	for _, rel := range []string{"proc/rknpu/version", "sys/kernel/debug/rknpu/version"} {
		b, ok, err := readFile(root, rel)
		switch {
		case errors.Is(err, fs.ErrPermission), err == nil && !ok:
			continue // missing, or debugfs, which is root's
		case err != nil:
			return "", err
		}
		v, err := ParseRKNPUVersion(b)
		if err != nil {
			return "", fmt.Errorf("/%s: %w", rel, err)
		}
		return v, nil
	}
	return version(root, "sys/module/rknpu/version")
}

// ParseRKNPUVersion reads the driver's version file: "RKNPU driver: v0.9.8".
func ParseRKNPUVersion(data []byte) (string, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	rest, ok := strings.CutPrefix(line, "RKNPU driver:")
	v := strings.TrimPrefix(strings.TrimSpace(rest), "v")
	if !ok || !dottedNumber(v) {
		return "", fmt.Errorf("%w: version line %q", ErrMalformed, clip(line))
	}
	return v, nil
}

// rknpuNode returns the device path the RKNPU driver serves, or "".
func rknpuNode(root string) (string, error) {
	renders, err := list(root, "dev/dri", "renderD")
	for _, r := range renders {
		drv := linkBase(root, "sys/class/drm/"+r+"/device/driver")
		if strings.EqualFold(drv, "rknpu") && isNode(root, "dev/dri/"+r) {
			return "/dev/dri/" + r, nil
		}
	}
	if isNode(root, "dev/rknpu") {
		return "/dev/rknpu", nil
	}
	return "", err
}
