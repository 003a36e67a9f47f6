// Package onnx runs ONNX models in process with ONNX Runtime, through
// github.com/yalue/onnxruntime_go. It needs cgo and loads libonnxruntime at
// run time from a path; only the flotilla-runtime-onnx plugin process links
// it, never the cgo-free agent (without cgo the package holds only the provider selection).
//
// The wrapper rejects some tensors ONNX models use; this package handles
// them at its own boundary:
//   - rank-0 tensors: inputs become the wrapper's Scalar values and declared
//     rank-0 outputs are preallocated as Scalars (numeric and bool types;
//     float16, bfloat16 and string scalars give runtime.ErrUnsupported);
//   - zero-size tensors: a one-element backing buffer carries the empty data;
//   - float16 and bfloat16 outputs: preallocated when the model declares a
//     static shape (the wrapper copies too few bytes when it allocates them);
//     with a dynamic shape they give runtime.ErrUnsupported;
//   - models with no inputs: run through an I/O binding with preallocated
//     outputs (the wrapper's Run indexes an empty slice and panics);
//   - any panic inside the wrapper becomes an error.
//
// Execution providers are chosen per load: the first of the providers a
// bundle variant asks for, in order, that can run here, else CPU, with the
// reason for each one skipped (LoadResult), e.g. "cuda: CUDA provider
// library libonnxruntime_providers_cuda.so not present in /opt/ort". A
// provider can run when firmware/accel finds the hardware it needs (an
// NVIDIA GPU with its driver and node for CUDA and TensorRT; the CPU
// architecture for OpenVINO and QNN), its library sits beside
// libonnxruntime or in the folder Options.ProviderDir names, and ONNX
// Runtime accepts it. The selection (selection.go) is pure Go and builds
// without cgo; the rest of the package needs cgo.
package onnx
