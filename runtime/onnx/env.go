//go:build cgo

package onnx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/flotilla-edge/flotilla/runtime"
)

// MinVersion is the oldest ONNX Runtime the wrapper works with.
const MinVersion = "1.24.0"

// The ONNX Runtime environment is one per process: the first Open loads the
// library and every later Open must name the same file.
var env struct {
	sync.Mutex
	lib     string
	version string
}

// Runtime is ONNX Runtime in this process. It implements runtime.Runtime
// and runtime.Describer.
type Runtime struct {
	libDir    string
	version   string
	providers []provider // every provider we know, with its availability

	mu     sync.Mutex
	models map[*Model]struct{}
	closed bool
}

var (
	_ runtime.Runtime   = (*Runtime)(nil)
	_ runtime.Describer = (*Runtime)(nil)
)

// Open loads libonnxruntime from libPath (once per process), checks its
// version and finds the execution providers it can use.
func Open(libPath string) (*Runtime, error) {
	if libPath == "" {
		return nil, fmt.Errorf("%w: no onnxruntime library path (set FLOTILLA_ORT_LIB)", runtime.ErrUnavailable)
	}
	abs, err := filepath.Abs(libPath)
	if err != nil {
		return nil, fmt.Errorf("onnx: library path: %w", err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("%w: onnxruntime library: %w", runtime.ErrUnavailable, err)
	}
	env.Lock()
	defer env.Unlock()
	if env.lib == "" {
		if err := initEnv(abs); err != nil {
			return nil, err
		}
	} else if env.lib != abs {
		return nil, fmt.Errorf("onnx: onnxruntime already loaded from %s, cannot load %s in the same process", env.lib, abs)
	}
	r := &Runtime{libDir: filepath.Dir(abs), version: env.version, models: map[*Model]struct{}{}}
	r.providers = probeProviders(r.libDir)
	return r, nil
}

func initEnv(lib string) (err error) {
	defer recoverInto(&err, "initialize onnxruntime")
	ort.SetSharedLibraryPath(lib)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("%w: onnxruntime %s: %w (it must be %s or newer)", runtime.ErrUnavailable, lib, err, MinVersion)
	}
	v := ort.GetVersion()
	if !versionAtLeast(v, MinVersion) {
		_ = ort.DestroyEnvironment()
		return fmt.Errorf("%w: onnxruntime %s is version %q, need %s or newer", runtime.ErrUnavailable, lib, v, MinVersion)
	}
	env.lib, env.version = lib, v
	return nil
}

// versionAtLeast compares dotted numeric versions ("1.30.0" >= "1.24.0").
func versionAtLeast(v, min string) bool {
	a, b := strings.Split(v, "."), strings.Split(min, ".")
	for i := range b {
		if i >= len(a) {
			return false
		}
		x, err1 := strconv.Atoi(a[i])
		y, err2 := strconv.Atoi(b[i])
		if err1 != nil || err2 != nil {
			return false
		}
		if x != y {
			return x > y
		}
	}
	return true
}

// Name is "onnx".
func (r *Runtime) Name() string { return "onnx" }

// Version is the loaded ONNX Runtime's version.
func (r *Runtime) Version() string { return r.version }

// Describe reports the library version and the execution providers it can
// use, best first, "cpu" last.
func (r *Runtime) Describe() runtime.Info {
	info := runtime.Info{Name: r.Name(), Version: r.version}
	for _, p := range r.providers {
		if p.reason == "" {
			info.ExecutionProviders = append(info.ExecutionProviders, p.name)
		}
	}
	info.ExecutionProviders = append(info.ExecutionProviders, "cpu")
	return info
}

// Load loads spec.Entry from the slot folder spec.Dir.
func (r *Runtime) Load(ctx context.Context, spec runtime.LoadSpec) (runtime.Model, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("%w: onnx runtime closed", runtime.ErrUnavailable)
	}
	m, err := r.load(spec)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		_ = m.Close()
		return nil, fmt.Errorf("%w: onnx runtime closed", runtime.ErrUnavailable)
	}
	r.models[m] = struct{}{}
	m.release = func() { r.mu.Lock(); delete(r.models, m); r.mu.Unlock() }
	return m, nil
}

// Close closes every model this Runtime loaded. The library stays loaded
// for the life of the process (ONNX Runtime's environment is global).
func (r *Runtime) Close() error {
	r.mu.Lock()
	r.closed = true
	models := make([]*Model, 0, len(r.models))
	for m := range r.models {
		models = append(models, m)
	}
	r.mu.Unlock()
	var errs []error
	for _, m := range models {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// recoverInto turns a panic in the wrapper into an error.
func recoverInto(err *error, what string) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("onnx: %s: onnxruntime_go panicked: %v", what, p)
	}
}
