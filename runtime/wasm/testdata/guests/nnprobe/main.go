// Command nnprobe misuses wasi_ephemeral_nn on request, for tests of the
// host module's error paths. Its input is an int32 tensor "probe"; its
// output an int32 tensor "errno" with what the host answered to the
// probe's last call (earlier calls must succeed, else it reports
// "setup" failed as an error). The slot holds model.wasm (the mlp guest,
// which the wasm backend runs).
package main

import (
	"encoding/binary"
	"fmt"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/guest"
	"github.com/flotilla-edge/flotilla/runtime/wasm/guest/nn"
)

const wild = 0xfffff000 // an address past any guest memory

func init() { guest.Handle(infer) }

func must(what string, errno uint32) {
	if errno != nn.Success {
		panic(fmt.Sprintf("nnprobe: setup %s: errno %d", what, errno))
	}
}

func ready() uint32 {
	g, errno := nn.LoadByName("model.wasm")
	must("load_by_name", errno)
	ctx, errno := nn.InitExecutionContext(g)
	must("init_execution_context", errno)
	return ctx
}

var pixels = make([]byte, 64*4)

func probe(p uint32) uint32 {
	switch p {
	case 0: // the happy path, end to end
		ctx := ready()
		must("set_input", nn.SetInput(ctx, 0, []uint32{1, 64}, nn.FP32, pixels))
		must("compute", nn.Compute(ctx))
		_, errno := nn.GetOutput(ctx, 0, make([]byte, 40))
		return errno
	case 1:
		_, errno := nn.LoadByNameAt(wild, 16)
		return errno
	case 2:
		_, errno := nn.LoadByName("missing.onnx")
		return errno
	case 3:
		_, errno := nn.LoadByName("../escape.onnx")
		return errno
	case 4:
		_, errno := nn.InitExecutionContext(99)
		return errno
	case 5:
		return nn.SetInput(ready(), 0, []uint32{1, 64}, nn.U8, pixels)
	case 6:
		return nn.SetInput(77, 0, []uint32{1, 64}, nn.FP32, pixels)
	case 7:
		return nn.SetInputAt(ready(), 0, wild)
	case 8:
		_, errno := nn.GetOutput(ready(), 0, make([]byte, 40))
		return errno
	case 9:
		ctx := ready()
		must("set_input", nn.SetInput(ctx, 0, []uint32{1, 64}, nn.FP32, pixels))
		must("compute", nn.Compute(ctx))
		_, errno := nn.GetOutput(ctx, 0, make([]byte, 39))
		return errno
	case 10:
		return nn.Compute(ready())
	case 11:
		_, errno := nn.Load([]byte("graph"), nn.EncodingTensorflow, nn.CPU)
		return errno
	case 12:
		ctx := ready()
		must("set_input", nn.SetInput(ctx, 0, []uint32{1, 64}, nn.FP32, pixels))
		must("compute", nn.Compute(ctx))
		_, errno := nn.GetOutputAt(ctx, 0, wild, 40)
		return errno
	case 13:
		return nn.SetInput(ready(), 0, []uint32{1, 63}, nn.FP32, pixels)
	case 14:
		return nn.SetInput(ready(), 3, []uint32{1, 64}, nn.FP32, pixels)
	case 15:
		_, errno := nn.Load([]byte("not a model"), nn.EncodingONNX, nn.CPU)
		return errno
	}
	return 1000
}

func infer(in []runtime.Tensor) ([]runtime.Tensor, error) {
	if len(in) != 1 || in[0].Name != "probe" || len(in[0].Data) != 4 {
		return nil, fmt.Errorf("nnprobe: want one int32 tensor probe")
	}
	errno := probe(binary.LittleEndian.Uint32(in[0].Data))
	return []runtime.Tensor{{Name: "errno", DType: runtime.Int32, Data: binary.LittleEndian.AppendUint32(nil, errno)}}, nil
}

func main() {}
