// Command nndigits classifies 8×8 digits through wasi_ephemeral_nn: it
// loads the slot's model by name (FLOTILLA_NN_MODEL, default model.onnx)
// so the model never passes through guest memory, and lets the host's
// backend (ONNX Runtime in production) compute. Input "pixels" float32
// [n,64], output "probabilities" float32 [n,10].
package main

import (
	"fmt"
	"os"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/guest"
	"github.com/flotilla-edge/flotilla/runtime/wasm/guest/nn"
)

var (
	loaded bool
	ctx    uint32
)

func init() {
	guest.Describe(
		[]runtime.TensorInfo{{Name: "pixels", DType: runtime.Float32, Shape: []int64{-1, 64}}},
		[]runtime.TensorInfo{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{-1, 10}}},
	)
	guest.Handle(infer)
}

func setup() error {
	if loaded {
		return nil
	}
	name := os.Getenv("FLOTILLA_NN_MODEL")
	if name == "" {
		name = "model.onnx"
	}
	g, errno := nn.LoadByName(name)
	if errno != nn.Success {
		return fmt.Errorf("nndigits: load_by_name %q: errno %d", name, errno)
	}
	if ctx, errno = nn.InitExecutionContext(g); errno != nn.Success {
		return fmt.Errorf("nndigits: init_execution_context: errno %d", errno)
	}
	loaded = true
	return nil
}

func infer(in []runtime.Tensor) ([]runtime.Tensor, error) {
	if err := setup(); err != nil {
		return nil, err
	}
	rows := uint32(in[0].Shape[0])
	if errno := nn.SetInput(ctx, 0, []uint32{rows, 64}, nn.FP32, in[0].Data); errno != nn.Success {
		return nil, fmt.Errorf("nndigits: set_input: errno %d", errno)
	}
	if errno := nn.Compute(ctx); errno != nn.Success {
		return nil, fmt.Errorf("nndigits: compute: errno %d", errno)
	}
	out := make([]byte, rows*10*4)
	n, errno := nn.GetOutput(ctx, 0, out)
	if errno != nn.Success || n != uint32(len(out)) {
		return nil, fmt.Errorf("nndigits: get_output: errno %d, %d bytes of %d", errno, n, len(out))
	}
	return []runtime.Tensor{{Name: "probabilities", DType: runtime.Float32, Shape: []int64{int64(rows), 10}, Data: out}}, nil
}

func main() {}
