// Command nnforward hands any graph to the host through wasi_ephemeral_nn:
// it loads the slot's model by name (FLOTILLA_NN_MODEL, default
// model.onnx), sets its inputs in the order given, computes, and returns
// every output as raw bytes (a uint8 tensor "output_N" of the output's
// byte length: the witx get_output gives neither type nor shape). The
// wasi-nn benchmark and conformance run use it.
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
	buf    = make([]byte, 64<<10)
	dims   []uint32
)

// witx tensor types by runtime.DType.
var types = map[runtime.DType]uint32{
	runtime.Float16: nn.FP16, runtime.Float32: nn.FP32, runtime.Float64: nn.FP64,
	runtime.Uint8: nn.U8, runtime.Int32: nn.I32, runtime.Int64: nn.I64,
}

func init() { guest.Handle(infer) }

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
		return fmt.Errorf("nnforward: load_by_name %q: errno %d", name, errno)
	}
	if ctx, errno = nn.InitExecutionContext(g); errno != nn.Success {
		return fmt.Errorf("nnforward: init_execution_context: errno %d", errno)
	}
	loaded = true
	return nil
}

func infer(in []runtime.Tensor) ([]runtime.Tensor, error) {
	if err := setup(); err != nil {
		return nil, err
	}
	for i, t := range in {
		typ, ok := types[t.DType]
		if !ok {
			return nil, fmt.Errorf("nnforward: input %d: wasi-nn has no %v tensors", i, t.DType)
		}
		dims = dims[:0]
		for _, d := range t.Shape {
			dims = append(dims, uint32(d))
		}
		if errno := nn.SetInput(ctx, uint32(i), dims, typ, t.Data); errno != nn.Success {
			return nil, fmt.Errorf("nnforward: set_input %d: errno %d", i, errno)
		}
	}
	if errno := nn.Compute(ctx); errno != nn.Success {
		return nil, fmt.Errorf("nnforward: compute: errno %d", errno)
	}
	var out []runtime.Tensor
	for i := uint32(0); ; i++ {
		n, errno := nn.GetOutput(ctx, i, buf)
		for errno == nn.TooLarge && len(buf) < 256<<20 {
			buf = make([]byte, 2*len(buf))
			n, errno = nn.GetOutput(ctx, i, buf)
		}
		if errno == nn.InvalidArgument && i > 0 {
			return out, nil // no output i: all read
		}
		if errno != nn.Success {
			return nil, fmt.Errorf("nnforward: get_output %d: errno %d", i, errno)
		}
		out = append(out, runtime.Tensor{Name: fmt.Sprintf("output_%d", i), DType: runtime.Uint8, Shape: []int64{int64(n)}, Data: append([]byte(nil), buf[:n]...)})
	}
}

func main() {}
