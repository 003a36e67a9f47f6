//go:build !linux

package hostfacts

import (
	"os"
	"runtime"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// discover reports what the Go runtime knows on systems without /proc.
func discover(_ string, f *flotillapb.Facts) error {
	f.Hostname, _ = os.Hostname()
	f.CpuCores = uint32(runtime.NumCPU())
	return nil
}
