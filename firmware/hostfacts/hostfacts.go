// Package hostfacts discovers what the device is: operating system and
// architecture, kernel release, hostname, CPU model, features and cores, and
// memory. The agent sends these facts in its birth message, and the control
// plane uses them to choose a bundle variant.
//
// Each probe reads files under a root folder ("/" on a device), so tests run
// on recorded /proc trees in testdata. Linux reads /proc; other systems
// report only what the Go runtime knows. Accelerators come from
// firmware/accel's probes on the same root; runtimes are discovered by the
// agent and left empty here.
package hostfacts

import (
	"errors"
	"runtime"
	"runtime/debug"

	"github.com/flotilla-edge/flotilla/firmware/accel"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Discover probes the host whose filesystem is mounted at root ("/" for the
// running system), accelerators included (accel.Discover). A missing or
// unreadable file leaves its fact empty; the error reports what could not be
// read, and the facts returned are still usable.
func Discover(root string) (*flotillapb.Facts, error) {
	f := &flotillapb.Facts{
		Os:   runtime.GOOS,
		Arch: Arch(runtime.GOARCH, goarm()),
	}
	err := discover(root, f)
	accels, aerr := accel.Discover(root)
	f.Accelerators = accels
	return f, errors.Join(err, aerr)
}

// Arch renders an architecture the way Facts carry it: GOARCH, with the ARM
// version appended for 32-bit ARM ("arm/7").
func Arch(goarch, goarm string) string {
	if goarch == "arm" && goarm != "" {
		// GOARM may carry a float ABI suffix ("7,softfloat").
		for i := 0; i < len(goarm); i++ {
			if goarm[i] == ',' {
				goarm = goarm[:i]
				break
			}
		}
		return goarch + "/" + goarm
	}
	return goarch
}

// goarm returns the GOARM this binary was built with, from its build info.
func goarm() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	for _, s := range bi.Settings {
		if s.Key == "GOARM" {
			return s.Value
		}
	}
	return ""
}
