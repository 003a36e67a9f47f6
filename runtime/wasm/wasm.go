// Package wasm is the "wasm" runtime: models that are WebAssembly modules,
// run in process by wazero behind the reactor ABI of package abi.
//
// Safe defaults, each a Config field: modules are compiled ahead of time
// where wazero has a compiler (amd64, arm64) and interpreted elsewhere
// (armv7); compiled code is cached on disk; every call runs under a
// deadline that closes the instance when it passes (an infinite loop is
// stopped); every instance has a memory cap (a memory bomb fails inside
// the guest, not the host); a pool bounds the instances of one model.
// An instance that traps, exits or overruns is discarded and the next call
// gets a fresh one.
//
// Guests get WASI preview 1 without a filesystem, plus the host modules
// the Config names (package wasinn provides wasi_ephemeral_nn).
package wasm

import (
	"context"
	"errors"
	"fmt"
	goruntime "runtime"
	"runtime/debug"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Config sets the runtime's limits. Zero values take the defaults.
type Config struct {
	// CacheDir is the folder of the on-disk compilation cache; empty keeps
	// compiled code in memory only.
	CacheDir string
	// MaxModuleBytes caps a module file's size (default 64 MiB).
	MaxModuleBytes int64
	// MemoryLimitMiB caps each instance's linear memory (default 256 MiB;
	// a model may lower it with the option memory_limit_mib).
	MemoryLimitMiB uint32
	// Instances caps the instances of one model, hence its concurrent
	// calls (default GOMAXPROCS).
	Instances int
	// CallTimeout bounds one call into a guest when the caller's context
	// has no earlier deadline (default 30 s).
	CallTimeout time.Duration
	// MaxOutputBytes caps a guest's serialized result (default 64 MiB).
	MaxOutputBytes int
	// Interpreter forces wazero's interpreter even where it has a compiler.
	Interpreter bool
	// HostModules are the import modules offered to guests besides WASI.
	HostModules []HostModule
}

func (c Config) withDefaults() Config {
	if c.MaxModuleBytes <= 0 {
		c.MaxModuleBytes = 64 << 20
	}
	if c.MemoryLimitMiB == 0 {
		c.MemoryLimitMiB = 256
	}
	if c.Instances <= 0 {
		c.Instances = goruntime.GOMAXPROCS(0)
	}
	if c.CallTimeout <= 0 {
		c.CallTimeout = 30 * time.Second
	}
	if c.MaxOutputBytes <= 0 {
		c.MaxOutputBytes = 64 << 20
	}
	return c
}

// Errors callers branch on with errors.Is, besides runtime's.
var (
	ErrClosed      = errors.New("wasm: closed")
	ErrTooLarge    = errors.New("wasm: too large")
	ErrABI         = errors.New("wasm: module does not implement the reactor ABI")
	ErrGuest       = errors.New("wasm: guest reported an error")
	ErrBadOutput   = errors.New("wasm: malformed guest output")
	ErrTrap        = errors.New("wasm: guest trapped")
	ErrMemoryLimit = errors.New("wasm: guest memory limit reached")
)

// Runtime is the "wasm" runtime.
type Runtime struct {
	cfg   Config
	cache wazero.CompilationCache

	mu       sync.Mutex
	models   map[*Model]struct{}
	rewrites map[[32]byte]rewrite // by the hash of the module's code
	closed   bool
}

var (
	_ runtime.Runtime   = (*Runtime)(nil)
	_ runtime.Describer = (*Runtime)(nil)
)

// New returns a runtime; Close releases it.
func New(cfg Config) (*Runtime, error) {
	cfg = cfg.withDefaults()
	cache := wazero.NewCompilationCache()
	if cfg.CacheDir != "" {
		var err error
		if cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("wasm: compilation cache: %w", err)
		}
	}
	return &Runtime{cfg: cfg, cache: cache, models: map[*Model]struct{}{}, rewrites: map[[32]byte]rewrite{}}, nil
}

// Name implements runtime.Runtime.
func (r *Runtime) Name() string { return "wasm" }

// Compiler reports whether modules are compiled to machine code (true) or
// interpreted.
func (r *Runtime) Compiler() bool {
	return !r.cfg.Interpreter && compilerSupported()
}

// compilerSupported mirrors wazero's own test: its compiler exists for
// amd64 and arm64 only (not armv7).
func compilerSupported() bool {
	return goruntime.GOARCH == "amd64" || goruntime.GOARCH == "arm64"
}

// Describe implements runtime.Describer.
func (r *Runtime) Describe() runtime.Info {
	engine := "interpreter"
	if r.Compiler() {
		engine = "compiler"
	}
	return runtime.Info{Name: "wasm", Version: wazeroVersion() + " " + engine, ExecutionProviders: []string{"cpu"}}
}

func wazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return "wazero " + d.Version
			}
		}
	}
	return "wazero"
}

// wazeroConfig: closeOnDone makes wazero check for a done context at every
// loop iteration, for modules the yieldpoint rewriter refuses.
func (r *Runtime) wazeroConfig(memoryMiB uint32, closeOnDone bool) wazero.RuntimeConfig {
	c := wazero.NewRuntimeConfig()
	if r.cfg.Interpreter {
		c = wazero.NewRuntimeConfigInterpreter()
	}
	return c.WithCompilationCache(r.cache).
		WithCloseOnContextDone(closeOnDone).
		WithMemoryLimitPages(memoryMiB * 16) // 64 KiB pages
}

// Close closes every model and the compilation cache.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	models := r.models
	r.models = nil
	r.mu.Unlock()
	for m := range models {
		m.Close()
	}
	return r.cache.Close(context.Background())
}

func (r *Runtime) track(m *Model) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	r.models[m] = struct{}{}
	return nil
}

func (r *Runtime) untrack(m *Model) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.models, m)
}
