// Package inferapi is the device's local inference API: the Open
// Inference Protocol (KServe V2) over HTTP, served on loopback TCP and a
// unix socket, so existing KServe and Triton clients work unchanged.
//
//	GET  /v2                                   server metadata
//	GET  /v2/health/live | /v2/health/ready    liveness, readiness
//	GET  /v2/models/{name}[/versions/{v}]      model metadata
//	GET  /v2/models/{name}[/versions/{v}]/ready
//	POST /v2/models/{name}[/versions/{v}]/infer
//	GET  /v2/systemsharedmemory[/region/{r}]/status
//	POST /v2/systemsharedmemory/region/{r}/register
//	POST /v2/systemsharedmemory[/region/{r}]/unregister
//
// A model's version is its release number (its version string is accepted
// too). Tensors come as JSON — every V2 datatype that maps to a
// runtime.DType, data flat or nested, row-major — or with the binary
// tensor extension (Inference-Header-Content-Length; binary_data_size per
// input; binary_data / binary_data_output for outputs).
//
// Input is hostile: a body over the limit is refused with 413 before it is
// read whole; a wrong name, datatype, shape or element count gets a 400
// naming the tensor and the problem. Each model runs at most Concurrency
// calls at once; more wait up to QueueTimeout (then 503) in a queue of
// MaxQueue (beyond it, 429 at once), both with Retry-After. Calls go
// through the lifecycle, which counts them for probation, diagnostics and
// telemetry.
package inferapi
