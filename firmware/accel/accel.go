// Package accel discovers the inference accelerators a device has: NVIDIA
// GPUs, Coral Edge TPUs (PCIe and USB), Hailo, Rockchip and Intel NPUs.
//
// Discovery is a list of small probes in the style of Nomad's fingerprints:
// each Probe finds one kind of accelerator by reading files under a root
// folder ("/" on a device), so tests run the same code on recorded /proc,
// /sys and /dev trees in testdata. A probe never executes a program unless
// told to (NVIDIA.SMI) and never opens a device node: it reads what the
// kernel publishes. A probe that finds nothing returns no accelerators and
// no error; a probe that finds a malformed file returns a ProbeError, and
// Run still reports what every other probe found.
//
// Device nodes: on a live system (root "/") a node counts only when it is a
// character device. A recorded tree cannot hold device nodes without root,
// so under any other root an empty regular file stands in for one.
//
// Kinds turns the result into the accelerator names a bundle variant asks
// for (RuntimeVariant.accelerators): ["cuda"] on a machine with a usable
// NVIDIA GPU and driver.
package accel

import (
	"errors"
	"fmt"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Probe finds one kind of accelerator in the tree mounted at root.
type Probe interface {
	// Name identifies the probe in errors ("nvidia").
	Name() string
	// Probe returns the accelerators found; it may return some together
	// with an error when part of what it read was malformed.
	Probe(root string) ([]*flotillapb.Accelerator, error)
}

// ErrMalformed marks a file whose content a probe could not understand.
var ErrMalformed = errors.New("malformed")

// ProbeError is one probe's failure. Run joins them with errors.Join, so a
// caller finds each with errors.As on the unwrapped list.
type ProbeError struct {
	Probe string
	Err   error
}

func (e *ProbeError) Error() string { return "accel: probe " + e.Probe + ": " + e.Err.Error() }
func (e *ProbeError) Unwrap() error { return e.Err }

// Discover runs this system's probes (DefaultProbes) on root.
func Discover(root string) ([]*flotillapb.Accelerator, error) {
	return Run(root, DefaultProbes())
}

// Run runs every probe on root, in order, and returns everything found. The
// error joins one *ProbeError per probe that failed (a panic in a probe is
// one, too); the accelerators are usable either way.
func Run(root string, probes []Probe) ([]*flotillapb.Accelerator, error) {
	var all []*flotillapb.Accelerator
	var errs []error
	for _, p := range probes {
		found, err := runOne(root, p)
		all = append(all, found...)
		if err != nil {
			errs = append(errs, &ProbeError{Probe: p.Name(), Err: err})
		}
	}
	return all, errors.Join(errs...)
}

func runOne(root string, p Probe) (found []*flotillapb.Accelerator, err error) {
	defer func() {
		if r := recover(); r != nil {
			found, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return p.Probe(root)
}
