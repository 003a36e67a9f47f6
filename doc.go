// Package flotilla runs machine-learning models on fleets of edge devices and
// keeps them healthy in the field.
//
// The module is laid out by role: agent/ is the device daemon, controlplane/
// is the server, runtime/ holds the inference runtimes, proto/ the wire
// protocol, firmware/ what ties the agent to a device, and cmd/ the binaries.
// This root package holds only the tests that fence those parts off from each
// other (see fences_test.go).
package flotilla
