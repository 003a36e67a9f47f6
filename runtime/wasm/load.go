package wasm

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Options a bundle variant may set.
const (
	// OptionMemoryLimitMiB lowers the instance memory cap below the runtime's.
	OptionMemoryLimitMiB = "memory_limit_mib"
	// OptionEnvPrefix starts options passed to the guest as environment
	// variables: "env.FOO" = "bar" sets FOO=bar.
	OptionEnvPrefix = "env."
)

// Load compiles the module spec names (from the compilation cache when it
// is there), instantiates it once, and reads its description.
func (r *Runtime) Load(ctx context.Context, spec runtime.LoadSpec) (runtime.Model, error) {
	memMiB, env, err := r.options(spec.Options)
	if err != nil {
		return nil, err
	}
	code, err := readEntry(spec, r.cfg.MaxModuleBytes)
	if err != nil {
		return nil, err
	}
	code, yields, err := r.instrument(code)
	if err != nil {
		return nil, fmt.Errorf("wasm: load %q: %w", spec.Entry, err)
	}
	wr := wazero.NewRuntimeWithConfig(ctx, r.wazeroConfig(memMiB, !yields))
	m := &Model{rt: r, wr: wr, spec: spec, memLimit: uint64(memMiB) << 20, env: env}
	if err := m.setup(ctx, code, yields); err != nil {
		wr.Close(ctx)
		return nil, fmt.Errorf("wasm: load %q: %w", spec.Entry, err)
	}
	if err := r.track(m); err != nil {
		m.Close()
		return nil, err
	}
	return m, nil
}

// Compile compiles the module spec names into the compilation cache
// without instantiating it, so that a later Load finds it there: an agent
// may compile a bundle's module while the bundle is still inactive.
func (r *Runtime) Compile(ctx context.Context, spec runtime.LoadSpec) error {
	memMiB, _, err := r.options(spec.Options)
	if err != nil {
		return err
	}
	code, err := readEntry(spec, r.cfg.MaxModuleBytes)
	if err != nil {
		return err
	}
	code, yields, err := r.instrument(code)
	if err != nil {
		return fmt.Errorf("wasm: compile %q: %w", spec.Entry, err)
	}
	wr := wazero.NewRuntimeWithConfig(ctx, r.wazeroConfig(memMiB, !yields))
	defer wr.Close(ctx)
	if _, err := wr.CompileModule(ctx, code); err != nil {
		return fmt.Errorf("wasm: compile %q: %w", spec.Entry, err)
	}
	return nil
}

func (r *Runtime) options(opts map[string]string) (memMiB uint32, env map[string]string, err error) {
	memMiB = r.cfg.MemoryLimitMiB
	env = map[string]string{}
	for k, v := range opts {
		switch {
		case k == OptionMemoryLimitMiB:
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 || n > uint64(r.cfg.MemoryLimitMiB) {
				return 0, nil, fmt.Errorf("%w: option %s=%q: want 1..%d", runtime.ErrInvalidInput, k, v, r.cfg.MemoryLimitMiB)
			}
			memMiB = uint32(n)
		case strings.HasPrefix(k, OptionEnvPrefix) && len(k) > len(OptionEnvPrefix):
			env[strings.TrimPrefix(k, OptionEnvPrefix)] = v
		default:
			return 0, nil, fmt.Errorf("%w: unknown wasm option %q", runtime.ErrInvalidInput, k)
		}
	}
	return memMiB, env, nil
}

// setup instantiates WASI and the host modules (with the yield function
// when code was instrumented), compiles code, checks its imports and
// exports, and starts the first instance.
func (m *Model) setup(ctx context.Context, code []byte, yields bool) error {
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, m.wr); err != nil {
		return fmt.Errorf("wasi: %w", err)
	}
	provided := map[string]bool{wasi_snapshot_preview1.ModuleName: true}
	if yields {
		if err := instantiateYield(ctx, m.wr); err != nil {
			return fmt.Errorf("yield: %w", err)
		}
		provided[yieldModule] = true
	}
	for _, hm := range m.rt.cfg.HostModules {
		if err := hm.Instantiate(ctx, m.wr); err != nil {
			return fmt.Errorf("host module %s: %w", hm.Name(), err)
		}
		provided[hm.Name()] = true
	}
	compiled, err := m.wr.CompileModule(ctx, code)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	for _, f := range compiled.ImportedFunctions() {
		if mod, name, _ := f.Import(); !provided[mod] {
			return fmt.Errorf("%w: module imports %s.%s, which this runtime does not provide", runtime.ErrUnsupported, mod, name)
		}
	}
	if err := checkExports(compiled); err != nil {
		return err
	}
	m.compiled = compiled
	m.pool = newPool(m.rt.cfg.Instances)
	in, err := m.newInstance(ctx)
	if err != nil {
		return err
	}
	if err := m.describe(ctx, in); err != nil {
		in.close(ctx)
		return err
	}
	m.pool.add(in)
	return nil
}

var i32, i64 = api.ValueTypeI32, api.ValueTypeI64

func checkExports(c wazero.CompiledModule) error {
	want := []struct {
		name           string
		params, result []api.ValueType
		optional       bool
	}{
		{"_initialize", nil, nil, true},
		{"alloc", []api.ValueType{i32}, []api.ValueType{i32}, false},
		{"free", []api.ValueType{i32, i32}, nil, false},
		{"infer", []api.ValueType{i32, i32}, []api.ValueType{i64}, false},
		{"describe", nil, []api.ValueType{i64}, true},
	}
	fns := c.ExportedFunctions()
	for _, w := range want {
		f, ok := fns[w.name]
		if !ok {
			if w.optional {
				continue
			}
			return fmt.Errorf("%w: no export %q", ErrABI, w.name)
		}
		if !slices.Equal(f.ParamTypes(), w.params) || !slices.Equal(f.ResultTypes(), w.result) {
			return fmt.Errorf("%w: export %q has type %v -> %v, want %v -> %v",
				ErrABI, w.name, typeNames(f.ParamTypes()), typeNames(f.ResultTypes()), typeNames(w.params), typeNames(w.result))
		}
	}
	if _, ok := c.ExportedMemories()["memory"]; !ok {
		return fmt.Errorf("%w: no exported memory", ErrABI)
	}
	return nil
}

func typeNames(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}
