// Package native runs inference runtimes that need native code (ONNX
// Runtime) in separate processes, through hashicorp/go-plugin over gRPC, so
// a crash in native code kills a plugin and never the agent. The package is
// cgo-free; the agent imports it.
//
// Both sides of the plugin protocol live here:
//   - the plugin side: Serve(rt) in a plugin binary's main serves any
//     runtime.Runtime as the flotillapb.Runtime gRPC service
//     (cmd/flotilla-runtime-onnx serves runtime/onnx);
//   - the host side: Open discovers the flotilla-runtime-* binaries in a
//     folder, starts each with a versioned handshake, negotiates its
//     capabilities with Describe, and supervises it. A Plugin is a
//     runtime.Runtime.
//
// Infer takes the fast path when the plugin speaks protocol 2 (frame.go):
// a socket pair per concurrent call, passed to the plugin over a bootstrap
// socket it inherits as descriptor 3, and a sealed memfd buffer per channel
// that holds the numeric tensors, so a call is one socket round trip and
// one copy each way on the host. gRPC carries everything else (Describe,
// Load, Unload) and Infer for protocol 1 plugins or tensors that fail
// validation (the plugin then says what is wrong).
//
// When a plugin process dies, the crash is counted, the process restarted
// (with backoff) and every model loaded through it reloaded on the new
// process. Meanwhile, and for a call in flight when it died, Infer fails
// with runtime.ErrUnavailable; it never blocks waiting for the restart, so
// the caller (the agent's health check, the inference API) decides whether
// to retry. Once the reload is done the same Model works again.
package native
