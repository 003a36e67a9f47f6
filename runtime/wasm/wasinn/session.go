package wasinn

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tetratelabs/wazero/api"

	"github.com/flotilla-edge/flotilla/runtime"
)

type sessionKey struct{}

// session is one guest instance's graphs and execution contexts; handles
// are indexes into them. An instance runs one call at a time.
type session struct {
	m        *Module
	spec     runtime.LoadSpec
	graphs   []*graph
	contexts []*execution
}

// execution is a graph execution context.
type execution struct {
	g       *graph
	inputs  []runtime.Tensor // by index; DType Undefined until set
	outputs []runtime.Tensor // after compute
}

// Context implements wasm.HostState.
func (s *session) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// Close implements wasm.HostState: it releases the instance's graphs.
func (s *session) Close() error {
	for _, g := range s.graphs {
		g.release()
	}
	s.graphs, s.contexts = nil, nil
	return nil
}

// load(builder_ptr, builder_len, encoding, target, graph_ptr)
func (s *session) load(ctx context.Context, mem api.Memory, p []uint32) Errno {
	builders, n, encoding, target, out := p[0], p[1], p[2], p[3], p[4]
	if encoding != EncodingONNX {
		return InvalidEncoding
	}
	providers, errno := providersFor(target)
	if errno != Success {
		return errno
	}
	if n != 1 { // an ONNX graph is one builder
		return InvalidArgument
	}
	ptr, ok1 := mem.ReadUint32Le(builders)
	size, ok2 := mem.ReadUint32Le(builders + 4)
	if !ok1 || !ok2 {
		return InvalidArgument
	}
	if int64(size) > s.m.cfg.MaxGraphBytes {
		return TooLarge
	}
	model, ok := mem.Read(ptr, size)
	if !ok {
		return InvalidArgument
	}
	if len(s.graphs) >= s.m.cfg.MaxGraphs {
		return TooLarge
	}
	dir, err := os.MkdirTemp("", "wasi-nn-graph-")
	if err != nil {
		return RuntimeError
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o600); err != nil {
		os.RemoveAll(dir)
		return RuntimeError
	}
	g, err := s.m.graphs.open(ctx, "", runtime.LoadSpec{Dir: dir, Entry: "model.onnx", Providers: providers})
	if err != nil {
		os.RemoveAll(dir)
		return errnoOf(err)
	}
	g.tmp = dir
	return s.addGraph(mem, g, out)
}

func providersFor(target uint32) ([]string, Errno) {
	switch target {
	case TargetCPU:
		return []string{"cpu"}, Success
	case TargetGPU:
		return []string{"cuda", "cpu"}, Success // the backend reports a fallback
	case TargetTPU:
		return nil, UnsupportedOperation
	}
	return nil, InvalidArgument
}

// load_by_name(name_ptr, name_len, graph_ptr): name is a file of the slot.
func (s *session) loadByName(ctx context.Context, mem api.Memory, p []uint32) Errno {
	b, ok := mem.Read(p[0], p[1])
	if !ok {
		return InvalidArgument
	}
	name := string(b)
	if !filepath.IsLocal(name) {
		return InvalidArgument
	}
	f, err := os.OpenInRoot(s.spec.Dir, name)
	if err != nil {
		return NotFound
	}
	f.Close()
	if len(s.graphs) >= s.m.cfg.MaxGraphs {
		return TooLarge
	}
	spec := runtime.LoadSpec{Dir: s.spec.Dir, Entry: name, Providers: s.spec.Providers}
	key := fmt.Sprintf("%s\x00%s\x00%v", spec.Dir, name, spec.Providers)
	g, err := s.m.graphs.open(ctx, key, spec)
	if err != nil {
		return errnoOf(err)
	}
	return s.addGraph(mem, g, p[2])
}

func (s *session) addGraph(mem api.Memory, g *graph, out uint32) Errno {
	if !mem.WriteUint32Le(out, uint32(len(s.graphs))) {
		g.release()
		return InvalidArgument
	}
	s.graphs = append(s.graphs, g)
	return Success
}

// init_execution_context(graph, context_ptr)
func (s *session) initExecutionContext(_ context.Context, mem api.Memory, p []uint32) Errno {
	if int(p[0]) >= len(s.graphs) {
		return InvalidArgument
	}
	if len(s.contexts) >= s.m.cfg.MaxContexts {
		return TooLarge
	}
	g := s.graphs[p[0]]
	if !mem.WriteUint32Le(p[1], uint32(len(s.contexts))) {
		return InvalidArgument
	}
	s.contexts = append(s.contexts, &execution{g: g, inputs: make([]runtime.Tensor, len(g.current().Inputs()))})
	return Success
}

func (s *session) execution(handle uint32) *execution {
	if int(handle) >= len(s.contexts) {
		return nil
	}
	return s.contexts[handle]
}

// set_input(context, index, tensor_ptr); the tensor record is
// {dims_ptr, dims_len u32; type u8 (padded to 4); data_ptr, data_len u32}.
func (s *session) setInput(_ context.Context, mem api.Memory, p []uint32) Errno {
	e := s.execution(p[0])
	infos := e.inputInfos()
	if e == nil || int(p[1]) >= len(e.inputs) || int(p[1]) >= len(infos) {
		return InvalidArgument
	}
	rec, ok := mem.Read(p[2], 20)
	if !ok {
		return InvalidArgument
	}
	u32 := func(off int) uint32 {
		return uint32(rec[off]) | uint32(rec[off+1])<<8 | uint32(rec[off+2])<<16 | uint32(rec[off+3])<<24
	}
	typ := rec[8]
	if int(typ) >= len(tensorTypes) || u32(4) > 16 {
		return InvalidArgument
	}
	dimBytes, ok1 := mem.Read(u32(0), u32(4)*4)
	data, ok2 := mem.Read(u32(12), u32(16))
	if !ok1 || !ok2 {
		return InvalidArgument
	}
	want := infos[p[1]]
	// data is a view of guest memory, not copied: the guest is single
	// threaded and waits in compute while the backend reads it (a guest
	// that rewrites it between set_input and compute only changes its own
	// input; a memory.grow leaves the view on the old, intact buffer).
	t := runtime.Tensor{Name: want.Name, DType: tensorTypes[typ], Data: data}
	for i := 0; i < len(dimBytes); i += 4 {
		t.Shape = append(t.Shape, int64(uint32(dimBytes[i])|uint32(dimBytes[i+1])<<8|uint32(dimBytes[i+2])<<16|uint32(dimBytes[i+3])<<24))
	}
	if t.Validate() != nil || !fits(t, want) {
		return InvalidArgument
	}
	e.inputs[p[1]] = t
	e.outputs = nil
	return Success
}

func (e *execution) inputInfos() []runtime.TensorInfo {
	if e == nil {
		return nil
	}
	return e.g.current().Inputs()
}

// fits reports whether t has the type and shape the graph declares.
func fits(t runtime.Tensor, w runtime.TensorInfo) bool {
	if t.DType != w.DType || len(t.Shape) != len(w.Shape) {
		return false
	}
	for i, d := range w.Shape {
		if d >= 0 && t.Shape[i] != d {
			return false
		}
	}
	return true
}

// compute(context)
func (s *session) compute(ctx context.Context, _ api.Memory, p []uint32) Errno {
	e := s.execution(p[0])
	if e == nil {
		return InvalidArgument
	}
	for _, t := range e.inputs {
		if t.DType == runtime.Undefined {
			return InvalidArgument // an input was never set
		}
	}
	out, err := e.g.infer(ctx, e.inputs)
	if err != nil {
		return errnoOf(err)
	}
	// Order the outputs as the graph declares them.
	if want := e.g.current().Outputs(); len(want) == len(out) {
		byName := map[string]runtime.Tensor{}
		for _, t := range out {
			byName[t.Name] = t
		}
		ordered := make([]runtime.Tensor, 0, len(out))
		for _, w := range want {
			if t, ok := byName[w.Name]; ok {
				ordered = append(ordered, t)
			}
		}
		if len(ordered) == len(out) {
			out = ordered
		}
	}
	e.outputs = out
	return Success
}

// get_output(context, index, out_ptr, out_max, written_ptr)
func (s *session) getOutput(_ context.Context, mem api.Memory, p []uint32) Errno {
	e := s.execution(p[0])
	if e == nil || e.outputs == nil || int(p[1]) >= len(e.outputs) {
		return InvalidArgument
	}
	data := e.outputs[p[1]].Data
	if uint64(len(data)) > uint64(p[3]) {
		return TooLarge
	}
	if !mem.Write(p[2], data) || !mem.WriteUint32Le(p[4], uint32(len(data))) {
		return InvalidArgument
	}
	return Success
}
