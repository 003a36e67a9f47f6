// Package wasinn is the wasi_ephemeral_nn host module for runtime/wasm:
// the witx ABI of wasi-nn with its 2023 enum values (graph encoding onnx =
// 1; execution targets cpu, gpu, tpu = 0, 1, 2; tensor types fp16, fp32,
// fp64, u8, i32, i64 = 0..5; errno success … not_found = 0..8). Each call
// forwards to a runtime.Runtime (the native ONNX runtime in production),
// so a WASM guest reaches the device's accelerator.
//
// load_by_name resolves the name to a file of the calling model's slot
// folder, so a large model never passes through guest memory; load writes
// the guest's bytes to a private temporary folder first. Graphs loaded by
// name are shared by every instance of a model. When the backend reports
// runtime.ErrUnavailable (its plugin restarted), compute re-creates the
// graph once and retries.
//
// Guest memory is never trusted: every pointer and length is checked
// against the memory, and every tensor against the graph's description.
package wasinn

import (
	"context"
	"errors"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
)

// ModuleName is the import module's name.
const ModuleName = "wasi_ephemeral_nn"

// Errno is the witx nn_errno.
type Errno uint32

// The errno values.
const (
	Success Errno = iota
	InvalidArgument
	InvalidEncoding
	MissingMemory
	Busy
	RuntimeError
	UnsupportedOperation
	TooLarge
	NotFound
)

// Graph encodings and execution targets.
const (
	EncodingONNX = 1
	TargetCPU    = 0
	TargetGPU    = 1
	TargetTPU    = 2
)

// tensorTypes maps the witx tensor_type to runtime's DType.
var tensorTypes = []runtime.DType{runtime.Float16, runtime.Float32, runtime.Float64, runtime.Uint8, runtime.Int32, runtime.Int64}

// Config sets the module's limits. Zero values take the defaults.
type Config struct {
	// MaxGraphBytes caps the bytes load accepts (default 64 MiB).
	MaxGraphBytes int64
	// MaxGraphs and MaxContexts cap what one instance may create (default
	// 16 and 256): witx has no call to free them.
	MaxGraphs, MaxContexts int
}

// Module is the host module. It is safe for concurrent use.
type Module struct {
	backend runtime.Runtime
	cfg     Config
	graphs  *registry
}

var _ wasm.HostModule = (*Module)(nil)

// New returns a module forwarding to backend.
func New(backend runtime.Runtime, cfg Config) *Module {
	if cfg.MaxGraphBytes <= 0 {
		cfg.MaxGraphBytes = 64 << 20
	}
	if cfg.MaxGraphs <= 0 {
		cfg.MaxGraphs = 16
	}
	if cfg.MaxContexts <= 0 {
		cfg.MaxContexts = 256
	}
	return &Module{backend: backend, cfg: cfg, graphs: newRegistry(backend)}
}

// Name implements wasm.HostModule.
func (m *Module) Name() string { return ModuleName }

// Bind implements wasm.HostModule: the state of one guest instance.
func (m *Module) Bind(spec runtime.LoadSpec) wasm.HostState {
	return &session{m: m, spec: spec}
}

type fn struct {
	name   string
	params int
	call   func(s *session, ctx context.Context, mem api.Memory, p []uint32) Errno
}

// Instantiate implements wasm.HostModule.
func (m *Module) Instantiate(ctx context.Context, r wazero.Runtime) error {
	b := r.NewHostModuleBuilder(ModuleName)
	for _, f := range []fn{
		{"load", 5, (*session).load},
		{"load_by_name", 3, (*session).loadByName},
		{"init_execution_context", 2, (*session).initExecutionContext},
		{"set_input", 3, (*session).setInput},
		{"compute", 1, (*session).compute},
		{"get_output", 5, (*session).getOutput},
	} {
		params := make([]api.ValueType, f.params)
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			stack[0] = uint64(m.dispatch(ctx, mod, f, stack))
		}), params, []api.ValueType{api.ValueTypeI32}).Export(f.name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

func (m *Module) dispatch(ctx context.Context, mod api.Module, f fn, stack []uint64) Errno {
	s, ok := ctx.Value(sessionKey{}).(*session)
	if !ok || s.m != m {
		return RuntimeError // called outside an instance the runtime bound
	}
	mem := mod.Memory()
	if mem == nil {
		return MissingMemory
	}
	p := make([]uint32, f.params)
	for i := range p {
		p[i] = api.DecodeU32(stack[i])
	}
	return f.call(s, ctx, mem, p)
}

// errnoOf maps a backend error to the errno a guest sees.
func errnoOf(err error) Errno {
	switch {
	case err == nil:
		return Success
	case errors.Is(err, runtime.ErrInvalidInput):
		return InvalidArgument
	case errors.Is(err, runtime.ErrUnavailable):
		return Busy
	case errors.Is(err, runtime.ErrUnsupported):
		return UnsupportedOperation
	}
	return RuntimeError
}
