//go:build cgo

package native

import "github.com/flotilla-edge/flotilla/runtime/internal/tensorproto"

// readTensorProto reads the ONNX backend tests' input_N.pb / output_N.pb.
var readTensorProto = tensorproto.Read
