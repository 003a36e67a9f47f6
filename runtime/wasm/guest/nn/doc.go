// Package nn is a guest's binding of the wasi_ephemeral_nn import module
// (the witx ABI, 2023 enum values) for Go programs built with GOOS=wasip1:
// raw calls that return the errno, so tests can misuse them on purpose.
// On other platforms the package holds only its constants.
package nn

// Errno values of the witx nn_errno enum.
const (
	Success              = 0
	InvalidArgument      = 1
	InvalidEncoding      = 2
	MissingMemory        = 3
	Busy                 = 4
	RuntimeError         = 5
	UnsupportedOperation = 6
	TooLarge             = 7
	NotFound             = 8
)

// Tensor types (tensor_type), graph encodings and execution targets.
const (
	FP16, FP32, FP64, U8, I32, I64 = 0, 1, 2, 3, 4, 5

	EncodingOpenVINO, EncodingONNX, EncodingTensorflow = 0, 1, 2

	CPU, GPU, TPU = 0, 1, 2
)
