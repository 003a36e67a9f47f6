package accel

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// NVIDIA finds NVIDIA GPUs through what the kernel driver publishes:
// /proc/driver/nvidia/version (driver version; /sys/module/nvidia/version
// as a fallback), one
// /proc/driver/nvidia/gpus/<bus>/information per GPU (model, bus location,
// device minor) and the /dev/nvidia<minor> node. The driver publishes no
// memory size in /proc or /sys, so MemoryBytes stays 0 unless SMI is set.
type NVIDIA struct {
	// SMI, when set, names the nvidia-smi program to run once per probe to
	// fill MemoryBytes (matched by PCI bus). Off by default: a probe reads
	// files only. A failure to run it is reported; the GPUs still are.
	SMI string
}

// Name implements Probe.
func (NVIDIA) Name() string { return "nvidia" }

const nvidiaProc = "proc/driver/nvidia"

// Probe implements Probe.
func (n NVIDIA) Probe(root string) ([]*flotillapb.Accelerator, error) {
	if !exists(root, nvidiaProc) {
		return nil, nil // no driver loaded
	}
	var errs []error
	driver, err := nvidiaDriverVersion(root)
	if err != nil {
		errs = append(errs, err)
	}
	buses, err := list(root, nvidiaProc+"/gpus", "")
	if err != nil {
		errs = append(errs, err)
	}
	var found []*flotillapb.Accelerator
	var busOf []string
	for _, bus := range buses {
		rel := path.Join(nvidiaProc, "gpus", bus, "information")
		b, ok, err := readFile(root, rel)
		if err == nil && !ok {
			err = fmt.Errorf("/%s missing", rel)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		gpu, err := ParseNvidiaInformation(b)
		if err != nil {
			errs = append(errs, fmt.Errorf("/%s: %w", rel, err))
			continue
		}
		a := &flotillapb.Accelerator{Kind: KindCUDA, Vendor: "NVIDIA", Model: gpu.Model, DriverVersion: driver}
		if dev := fmt.Sprintf("dev/nvidia%d", gpu.DeviceMinor); !gpu.Excluded && isNode(root, dev) {
			a.DevicePath = "/" + dev
		}
		found = append(found, a)
		busOf = append(busOf, cmpOr(gpu.BusLocation, bus))
	}
	if n.SMI != "" && len(found) > 0 {
		if err := n.fillMemory(found, busOf); err != nil {
			errs = append(errs, err)
		}
	}
	return found, errors.Join(errs...)
}

// nvidiaDriverVersion reads /proc/driver/nvidia/version. When that fails it
// falls back to /sys/module/nvidia/version (the bare version, where the
// module declares one), and still reports the failure.
func nvidiaDriverVersion(root string) (string, error) {
	const rel = nvidiaProc + "/version"
	b, ok, err := readFile(root, rel)
	switch {
	case err != nil:
	case !ok:
		err = fmt.Errorf("/%s missing", rel)
	default:
		var v string
		if v, err = ParseNvidiaVersion(b); err == nil {
			return v, nil
		}
		err = fmt.Errorf("/%s: %w", rel, err)
	}
	if v, _ := version(root, "sys/module/nvidia/version"); dottedNumber(v) {
		return v, err
	}
	return "", err
}

// ParseNvidiaVersion returns the driver version from the text of
// /proc/driver/nvidia/version, whose first line reads, for the proprietary
// and the open kernel modules:
//
//	NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 …
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build …
func ParseNvidiaVersion(data []byte) (string, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "NVRM version:")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(rest) {
			if dottedNumber(f) {
				return f, nil
			}
		}
		return "", fmt.Errorf("%w: no version number in %q", ErrMalformed, clip(strings.TrimSpace(rest)))
	}
	return "", fmt.Errorf("%w: no \"NVRM version:\" line", ErrMalformed)
}

// dottedNumber reports whether s looks like 535.104.05: digits in two or
// more dot-separated groups.
func dottedNumber(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) < 2 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

// NvidiaGPU is what /proc/driver/nvidia/gpus/<bus>/information says. Facts
// carry only the model and the device node; the rest is for callers that
// want more (diagnostics, matching nvidia-smi output by bus).
type NvidiaGPU struct {
	Model       string // "NVIDIA H100 80GB HBM3"
	UUID        string // "GPU-310f59c2-…"
	BusLocation string // "0000:00:06.0"
	DeviceMinor int    // N in /dev/nvidiaN
	Firmware    string // "GPU Firmware" (GSP), empty on older drivers
	VideoBIOS   string
	Excluded    bool // "GPU Excluded: Yes": the driver will not use it
}

// ParseNvidiaInformation parses one GPU's information file: "Key: value"
// lines. Model and Device Minor are required.
func ParseNvidiaInformation(data []byte) (NvidiaGPU, error) {
	g := NvidiaGPU{DeviceMinor: -1}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch strings.TrimSpace(key) {
		case "Model":
			g.Model = val
		case "GPU UUID":
			g.UUID = val
		case "Bus Location":
			g.BusLocation = val
		case "Device Minor":
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return g, fmt.Errorf("%w: device minor %q", ErrMalformed, clip(val))
			}
			g.DeviceMinor = n
		case "GPU Firmware":
			g.Firmware = val
		case "Video BIOS":
			g.VideoBIOS = val
		case "GPU Excluded":
			g.Excluded = strings.EqualFold(val, "yes")
		}
	}
	switch {
	case g.Model == "":
		return g, fmt.Errorf("%w: no Model line", ErrMalformed)
	case g.DeviceMinor < 0:
		return g, fmt.Errorf("%w: no Device Minor line", ErrMalformed)
	}
	return g, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
