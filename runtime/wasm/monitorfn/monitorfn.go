// Package monitorfn runs a bundle's monitor function: a WebAssembly module
// (BundleManifest.monitor) mapping one raw input row of a model to the
// features its drift is monitored on, for inputs where no single element
// means anything alone (an image). The agent's metrics writer calls it on
// device and `flotctl bundle build -baseline` over the reference data, so
// baseline and devices compute features by the same code.
//
// The ABI. A module exports its linear memory as "memory", the monitor
// function under the manifest's name, an allocator, and optionally the
// reactor start function; nothing else (no table, global or other
// function):
//
//	_initialize()                           optional, once per instance, first
//	alloc(size i32) -> ptr i32              once per instance: a buffer of size bytes
//	                                        the host reuses for every call
//	<export>(in_ptr, in_len, out_ptr, out_cap i32) -> i32
//
// The function reads in_len bytes at in_ptr, the input tensor's first row
// in its little-endian encoding (dtype and shape from the manifest's input
// spec), writes its results as little-endian float64s at out_ptr (room
// for out_cap of them) and returns how many it wrote, or a negative error
// code. Both pointers are inside the buffer alloc returned: the host
// cannot pick addresses in a guest's heap itself (a Go guest's allocator
// would take back memory the host grew).
//
// The sandbox is runtime/wasm's: WASI preview 1 without a filesystem,
// network, real clock or random source (so a function is deterministic
// and a baseline computed on a server matches a device's), a memory cap,
// and a deadline per call. On top of it each call has fuel: the module's
// loops are rewritten (package yieldpoint) to call the host every
// yieldpoint.Fuel iterations, and a call past its Fuel iterations is
// stopped with ErrFuel. Modules the rewriter cannot handle are refused, so
// fuel is always counted. A trap, exit or overrun discards the instance;
// the next call starts a fresh one.
package monitorfn

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/yieldpoint"
)

// Config sets a function's limits. Zero values take the defaults.
type Config struct {
	// CacheDir is the folder of wazero's on-disk compilation cache (the
	// agent shares runtime/wasm's); empty keeps compiled code in memory.
	CacheDir string
	// MaxModuleBytes caps the module's size (default 16 MiB).
	MaxModuleBytes int64
	// MemoryLimitMiB caps the instance's linear memory (default 64 MiB).
	MemoryLimitMiB uint32
	// MaxInputBytes caps one input row (default 1 MiB).
	MaxInputBytes int
	// MaxFeatures is out_cap, the most results one call may return
	// (default 1024, as a summary's features).
	MaxFeatures int
	// Fuel is the loop iterations one call may run, counted in steps of
	// yieldpoint.Fuel (default 2^24: about 0.1 s of a tight Go loop here).
	Fuel uint64
	// CallTimeout bounds one call, and the instance's start, in time
	// (default 1 s): a backstop to Fuel, which a slow host function or a
	// recursion without loops does not spend.
	CallTimeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxModuleBytes <= 0 {
		c.MaxModuleBytes = 16 << 20
	}
	if c.MemoryLimitMiB == 0 {
		c.MemoryLimitMiB = 64
	}
	if c.MaxInputBytes <= 0 {
		c.MaxInputBytes = 1 << 20
	}
	if c.MaxFeatures <= 0 {
		c.MaxFeatures = 1024
	}
	if c.Fuel == 0 {
		c.Fuel = 1 << 24
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = time.Second
	}
	return c
}

// Errors callers branch on with errors.Is.
var (
	// ErrModule: the module is malformed or breaks the ABI; it is refused.
	ErrModule = errors.New("monitorfn: module refused")
	// ErrTooLarge: a module or an input over its limit.
	ErrTooLarge = errors.New("monitorfn: too large")
	// ErrFuel: a call ran past its fuel (or its deadline) and was stopped.
	ErrFuel = errors.New("monitorfn: out of fuel")
	// ErrGuest: the function returned a negative error code.
	ErrGuest = errors.New("monitorfn: function reported an error")
	// ErrOutput: the function claimed more results than it had room for,
	// or its buffer is not in its memory.
	ErrOutput = errors.New("monitorfn: bad output")
	// ErrTrap: the guest trapped, exited or hit its memory cap.
	ErrTrap = errors.New("monitorfn: guest trapped")
	// ErrClosed: the function was closed.
	ErrClosed = errors.New("monitorfn: closed")
)

// The names the ABI fixes, and the fuel meter's import.
const (
	exportAlloc      = "alloc"
	exportInitialize = "_initialize"
	exportMemory     = "memory"
	yieldModule      = "flotilla_yield"
	yieldFunc        = "yield"
)

// exitFuel is the exit code the fuel meter closes a module with.
const exitFuel = 0xf0e1

// Function is one loaded monitor function. Call is safe for concurrent
// use; calls run one at a time.
type Function struct {
	cfg      Config
	export   string
	wr       wazero.Runtime
	cache    wazero.CompilationCache
	compiled wazero.CompiledModule

	mu     sync.Mutex
	inst   *instance // nil: the next call instantiates
	closed bool
	// steps is the fuel meter: yields in the current call, out of
	// maxSteps; deadline is the call's (a time, not a context: one
	// context per call would cost allocations). Only the goroutine
	// holding mu runs the guest.
	steps, maxSteps uint64
	deadline        time.Time
	stack           [4]uint64 // the call's parameters, then its result
}

// instance is one instantiation of the module and its buffer.
type instance struct {
	mod          api.Module
	fn           api.Function
	inPtr, outPt uint32
}

// Load checks and compiles code, whose monitor function is export, and
// starts an instance of it. Close releases it.
func Load(ctx context.Context, code []byte, export string, cfg Config) (*Function, error) {
	cfg = cfg.withDefaults()
	if int64(len(code)) > cfg.MaxModuleBytes {
		return nil, fmt.Errorf("%w: module of %d bytes, limit %d", ErrTooLarge, len(code), cfg.MaxModuleBytes)
	}
	if export == "" || export == exportAlloc || export == exportInitialize {
		return nil, fmt.Errorf("%w: export name %q", ErrModule, export)
	}
	if err := checkExports(code, export); err != nil {
		return nil, err
	}
	code, err := yieldpoint.Instrument(code, yieldModule, yieldFunc)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModule, err)
	}
	f := &Function{cfg: cfg, export: export,
		maxSteps: (cfg.Fuel + yieldpoint.Fuel - 1) / yieldpoint.Fuel}
	rc := wazero.NewRuntimeConfig().
		WithCloseOnContextDone(false). // the yield calls check the context
		WithMemoryLimitPages(cfg.MemoryLimitMiB * 16)
	if cfg.CacheDir != "" {
		if f.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("monitorfn: compilation cache: %w", err)
		}
		rc = rc.WithCompilationCache(f.cache)
	}
	f.wr = wazero.NewRuntimeWithConfig(ctx, rc)
	if err := f.setup(ctx, code); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// checkExports refuses a module exporting anything but memory, the
// monitor function, alloc and _initialize, or lacking one of the first
// three.
func checkExports(code []byte, export string) error {
	exps, err := exports(code)
	if err != nil {
		return err
	}
	allowed := map[string]byte{exportMemory: kindMemory, export: kindFunc, exportAlloc: kindFunc, exportInitialize: kindFunc}
	found := map[string]bool{}
	for _, e := range exps {
		if kind, ok := allowed[e.name]; !ok || kind != e.kind {
			return fmt.Errorf("%w: exports %s %q; a monitor module exports memory, %q, alloc and optionally _initialize only",
				ErrModule, kindName(e.kind), e.name, export)
		}
		found[e.name] = true
	}
	for _, name := range []string{exportMemory, export, exportAlloc} {
		if !found[name] {
			return fmt.Errorf("%w: no export %q", ErrModule, name)
		}
	}
	return nil
}

var i32 = api.ValueTypeI32

func (f *Function) setup(ctx context.Context, code []byte) error {
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, f.wr); err != nil {
		return fmt.Errorf("monitorfn: wasi: %w", err)
	}
	if _, err := f.wr.NewHostModuleBuilder(yieldModule).NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(f.yield), nil, nil).Export(yieldFunc).Instantiate(ctx); err != nil {
		return fmt.Errorf("monitorfn: fuel meter: %w", err)
	}
	compiled, err := f.wr.CompileModule(ctx, code)
	if err != nil {
		return fmt.Errorf("%w: compile: %w", ErrModule, err)
	}
	f.compiled = compiled
	for _, fn := range compiled.ImportedFunctions() {
		if mod, name, _ := fn.Import(); mod != wasi_snapshot_preview1.ModuleName && mod != yieldModule {
			return fmt.Errorf("%w: imports %s.%s; a monitor module may import WASI preview 1 only", ErrModule, mod, name)
		}
	}
	if len(compiled.ImportedMemories()) > 0 {
		return fmt.Errorf("%w: imports a memory", ErrModule)
	}
	fns := compiled.ExportedFunctions()
	for name, want := range map[string][2][]api.ValueType{
		f.export:    {{i32, i32, i32, i32}, {i32}},
		exportAlloc: {{i32}, {i32}},
	} {
		fn := fns[name]
		if !slices.Equal(fn.ParamTypes(), want[0]) || !slices.Equal(fn.ResultTypes(), want[1]) {
			return fmt.Errorf("%w: export %q has type %v -> %v, want %v -> %v", ErrModule, name,
				names(fn.ParamTypes()), names(fn.ResultTypes()), names(want[0]), names(want[1]))
		}
	}
	if fn, ok := fns[exportInitialize]; ok && (len(fn.ParamTypes()) > 0 || len(fn.ResultTypes()) > 0) {
		return fmt.Errorf("%w: export %q takes or returns values", ErrModule, exportInitialize)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	in, err := f.instantiate(ctx)
	if err != nil {
		return err
	}
	f.inst = in
	return nil
}

// bufferSize is the bytes asked of alloc: the input, padding to align the
// output, the output.
func (f *Function) bufferSize() uint32 {
	return uint32(f.cfg.MaxInputBytes + 7 + 8*f.cfg.MaxFeatures)
}

// instantiate starts an instance and takes its buffer. f.mu is held.
func (f *Function) instantiate(ctx context.Context) (*instance, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.CallTimeout)
	defer cancel()
	f.steps, f.deadline = 0, time.Now().Add(f.cfg.CallTimeout)
	cfg := wazero.NewModuleConfig().WithName("").
		WithStartFunctions(exportInitialize).
		WithStdout(io.Discard).WithStderr(io.Discard)
	mod, err := f.wr.InstantiateModule(ctx, f.compiled, cfg)
	if err != nil {
		return nil, fmt.Errorf("monitorfn: start: %w", f.callError(ctx, err))
	}
	in := &instance{mod: mod, fn: mod.ExportedFunction(f.export)}
	size := f.bufferSize()
	f.steps = 0
	res, err := mod.ExportedFunction(exportAlloc).Call(ctx, uint64(size))
	if err != nil {
		mod.Close(ctx)
		return nil, fmt.Errorf("monitorfn: alloc: %w", f.callError(ctx, err))
	}
	ptr := uint32(res[0])
	if _, ok := mod.Memory().Read(ptr, size); !ok {
		mod.Close(ctx)
		return nil, fmt.Errorf("%w: alloc(%d) returned %#x, outside memory of %d bytes", ErrOutput, size, ptr, mod.Memory().Size())
	}
	in.inPtr = ptr
	in.outPt = (ptr + uint32(f.cfg.MaxInputBytes) + 7) &^ 7
	return in, nil
}

// Call runs the function on one input row and returns its results.
// Errors wrap ErrTooLarge, ErrFuel, ErrGuest, ErrOutput, ErrTrap or
// ErrClosed; after any but the first two, the next call gets a fresh
// instance.
func (f *Function) Call(ctx context.Context, input []byte) ([]float64, error) {
	return f.AppendCall(ctx, nil, input)
}

// AppendCall is Call appending the results to dst.
func (f *Function) AppendCall(ctx context.Context, dst []float64, input []byte) ([]float64, error) {
	if len(input) > f.cfg.MaxInputBytes {
		return dst, fmt.Errorf("%w: input of %d bytes, limit %d", ErrTooLarge, len(input), f.cfg.MaxInputBytes)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return dst, ErrClosed
	}
	if f.inst == nil {
		in, err := f.instantiate(ctx)
		if err != nil {
			return dst, err
		}
		f.inst = in
	}
	in := f.inst
	mem := in.mod.Memory()
	if !mem.Write(in.inPtr, input) {
		f.discard(ctx)
		return dst, fmt.Errorf("%w: the input buffer left memory", ErrOutput)
	}
	f.steps, f.deadline = 0, time.Now().Add(f.cfg.CallTimeout)
	f.stack = [4]uint64{uint64(in.inPtr), uint64(len(input)), uint64(in.outPt), uint64(f.cfg.MaxFeatures)}
	if err := in.fn.CallWithStack(ctx, f.stack[:]); err != nil {
		f.discard(ctx)
		return dst, f.callError(ctx, err)
	}
	n := int32(f.stack[0])
	if n < 0 {
		return dst, fmt.Errorf("%w: code %d", ErrGuest, n)
	}
	if int(n) > f.cfg.MaxFeatures {
		f.discard(ctx)
		return dst, fmt.Errorf("%w: %d results, room for %d", ErrOutput, n, f.cfg.MaxFeatures)
	}
	b, ok := mem.Read(in.outPt, uint32(8*n))
	if !ok {
		f.discard(ctx)
		return dst, fmt.Errorf("%w: the output buffer left memory", ErrOutput)
	}
	for i := range int(n) {
		dst = append(dst, math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
	}
	return dst, nil
}

// discard closes the current instance. f.mu is held.
func (f *Function) discard(ctx context.Context) {
	if f.inst != nil {
		f.inst.mod.Close(context.WithoutCancel(ctx))
		f.inst = nil
	}
}

// yield is the fuel meter, called every yieldpoint.Fuel loop iterations:
// it stops the call past its fuel or its context.
func (f *Function) yield(ctx context.Context, mod api.Module, _ []uint64) {
	f.steps++
	code := uint32(0)
	switch err := ctx.Err(); {
	case f.steps > f.maxSteps:
		code = exitFuel
	case errors.Is(err, context.Canceled):
		code = sys.ExitCodeContextCanceled
	case err != nil || time.Now().After(f.deadline):
		code = sys.ExitCodeDeadlineExceeded
	default:
		return
	}
	mod.CloseWithExitCode(ctx, code)
	panic(sys.NewExitError(code))
}

// callError classifies a failed call into the guest.
func (f *Function) callError(ctx context.Context, err error) error {
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case exitFuel:
			return fmt.Errorf("%w: past %d loop iterations", ErrFuel, f.cfg.Fuel)
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("%w: past its deadline of %v: %w", ErrFuel, f.cfg.CallTimeout, context.DeadlineExceeded)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("monitorfn: call canceled: %w", context.Canceled)
		}
		return fmt.Errorf("%w: exit code %d", ErrTrap, exit.ExitCode())
	}
	switch err := ctx.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: past its deadline of %v: %w", ErrFuel, f.cfg.CallTimeout, err)
	case err != nil:
		return fmt.Errorf("monitorfn: call canceled: %w", err)
	}
	// wazero appends the guest's stack trace after the first line.
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return fmt.Errorf("%w: %s", ErrTrap, msg)
}

// Close releases the function; later calls return ErrClosed.
func (f *Function) Close() error {
	ctx := context.Background()
	f.mu.Lock()
	f.closed = true
	f.discard(ctx)
	f.mu.Unlock()
	err := f.wr.Close(ctx)
	if f.cache != nil {
		err = errors.Join(err, f.cache.Close(ctx))
	}
	return err
}

func names(ts []api.ValueType) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = api.ValueTypeName(t)
	}
	return out
}
