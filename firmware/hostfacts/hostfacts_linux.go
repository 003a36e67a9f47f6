package hostfacts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// discover reads the Linux facts from the /proc tree under root.
func discover(root string, f *flotillapb.Facts) error {
	var errs []error
	read := func(rel string) []byte {
		b, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			errs = append(errs, err)
		}
		return b
	}
	f.Kernel = strings.TrimSpace(string(read("proc/sys/kernel/osrelease")))
	f.Hostname = strings.TrimSpace(string(read("proc/sys/kernel/hostname")))
	if f.Hostname == "" && (root == "/" || root == "") {
		f.Hostname, _ = os.Hostname()
	}
	cpu := ParseCPUInfo(read("proc/cpuinfo"))
	f.CpuModel, f.CpuFeatures, f.CpuCores = cpu.Model, cpu.Features, cpu.Cores
	f.MemoryBytes = ParseMemTotal(read("proc/meminfo"))
	return errors.Join(errs...)
}
