//go:build !linux

package accel

// DefaultProbes returns no probes: every accelerator found here is found
// through Linux's /proc, /sys and /dev. (On macOS the Neural Engine is
// reached through CoreML, which the ONNX runtime reports as a provider.)
func DefaultProbes() []Probe { return nil }
