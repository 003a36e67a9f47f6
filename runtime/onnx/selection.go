package onnx

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/flotilla-edge/flotilla/firmware/accel"
)

// Provider is an execution provider this package knows how to ask ONNX
// Runtime for: its name as bundles spell it, the library ONNX Runtime loads
// for it, and what it needs of the hardware.
type Provider struct {
	Name string
	Lib  string // "" when no build for this system carries it
	// Accel is the accelerator kind (firmware/accel) it runs on; "" when it
	// runs on the CPU's architecture alone (Arch).
	Accel string
	Arch  string // the GOARCH it needs; "" for any
}

// Providers, best first. CPU is built into every library and always comes
// last, so it is not listed.
var Providers = []Provider{
	{Name: "tensorrt", Lib: "libonnxruntime_providers_tensorrt.so", Accel: accel.KindCUDA},
	{Name: "cuda", Lib: "libonnxruntime_providers_cuda.so", Accel: accel.KindCUDA},
	{Name: "openvino", Lib: "libonnxruntime_providers_openvino.so", Arch: "amd64"},
	{Name: "qnn", Lib: "libQnnHtp.so", Arch: "arm64"},
	{Name: "coreml"}, // macOS only: no Linux build carries it
}

// Hardware is what selection needs to know of the machine.
type Hardware struct {
	Accels []string // usable accelerator kinds (accel.Kinds)
	Arch   string   // GOARCH
}

// availability says, for each known provider, why it cannot be used here
// ("" when it can): the hardware it needs, then its library in one of
// dirs, then ONNX Runtime accepting it (try). Pure but for the file checks,
// so tests run it on recorded hardware and folders of their own.
func availability(hw Hardware, dirs []string, try func(name string) error) map[string]string {
	out := make(map[string]string, len(Providers))
	for _, p := range Providers {
		out[p.Name] = unavailable(p, hw, dirs, try)
	}
	return out
}

func unavailable(p Provider, hw Hardware, dirs []string, try func(string) error) string {
	switch {
	case p.Lib == "":
		return "not available on this operating system"
	case p.Accel == accel.KindCUDA && !slices.Contains(hw.Accels, accel.KindCUDA):
		return "no usable NVIDIA GPU found (a GPU, its driver and its /dev node)"
	case p.Accel != "" && !slices.Contains(hw.Accels, p.Accel):
		return fmt.Sprintf("no usable %s accelerator found", p.Accel)
	case p.Arch != "" && hw.Arch != p.Arch:
		return fmt.Sprintf("needs a %s CPU, this is %s", p.Arch, hw.Arch)
	}
	path := findLib(p.Lib, dirs)
	if path == "" {
		return fmt.Sprintf("%s provider library %s not present in %s", strings.ToUpper(p.Name), p.Lib, strings.Join(dirs, " or "))
	}
	if err := try(p.Name); err != nil {
		return fmt.Sprintf("ONNX Runtime cannot use %s: %v", path, err)
	}
	return ""
}

// findLib returns the first dirs/lib that exists.
func findLib(lib string, dirs []string) string {
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, lib)); err == nil {
			return filepath.Join(d, lib)
		}
	}
	return ""
}

// choose picks the first provider asked for that is available, and says
// why each one asked before it was not: "cuda: …; tensorrt: …".
func choose(asked []string, avail map[string]string) (chosen, fallback string) {
	var reasons []string
	for _, name := range asked {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "cpu" {
			break
		}
		reason, known := avail[name]
		switch {
		case !known:
			reasons = append(reasons, name+": unknown execution provider")
		case reason != "":
			reasons = append(reasons, name+": "+reason)
		default:
			return name, strings.Join(reasons, "; ")
		}
	}
	return "cpu", strings.Join(reasons, "; ")
}
