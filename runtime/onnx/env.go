//go:build cgo

package onnx

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/flotilla-edge/flotilla/firmware/accel"
	"github.com/flotilla-edge/flotilla/runtime"
)

// MinVersion is the oldest ONNX Runtime the wrapper works with.
const MinVersion = "1.24.0"

// The ONNX Runtime environment is one per process: the first Open loads the
// library and every later Open must name the same file.
var env struct {
	sync.Mutex
	lib         string // the library asked for
	providerDir string // Options.ProviderDir, absolute
	stageDir    string // the private folder of links, if any
	version     string
}

// Runtime is ONNX Runtime in this process. It implements runtime.Runtime
// and runtime.Describer.
type Runtime struct {
	version string
	avail   map[string]string // why each known provider cannot be used; "" when it can
	hw      Hardware
	hwErr   error

	mu     sync.Mutex
	models map[*Model]struct{}
	closed bool
}

var (
	_ runtime.Runtime   = (*Runtime)(nil)
	_ runtime.Describer = (*Runtime)(nil)
)

// Options configure OpenWith.
type Options struct {
	// ProviderDir holds execution-provider libraries supplied apart from
	// libonnxruntime (libonnxruntime_providers_cuda.so with
	// libonnxruntime_providers_shared.so, …). ONNX Runtime loads them only
	// from its own folder, so they are linked beside a link to the library
	// in a private folder, and the library loaded from there. Empty: only
	// the library's own folder is looked in.
	ProviderDir string
	// HardwareRoot is where firmware/accel discovers accelerators: "/" (the
	// default) on a device, a recorded tree in tests.
	HardwareRoot string
}

// Open loads libonnxruntime from libPath with default Options.
func Open(libPath string) (*Runtime, error) { return OpenWith(libPath, Options{}) }

// OpenWith loads libonnxruntime from libPath (once per process), checks
// its version and finds the execution providers it can use: those whose
// hardware firmware/accel finds under o.HardwareRoot, whose library is
// present, and which ONNX Runtime accepts.
func OpenWith(libPath string, o Options) (*Runtime, error) {
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
	provDir := o.ProviderDir
	if provDir != "" {
		if provDir, err = filepath.Abs(provDir); err != nil {
			return nil, fmt.Errorf("onnx: provider folder: %w", err)
		}
	}
	env.Lock()
	defer env.Unlock()
	if env.lib == "" {
		if err := initEnv(abs, provDir); err != nil {
			return nil, err
		}
	} else if env.lib != abs || env.providerDir != provDir {
		return nil, fmt.Errorf("onnx: onnxruntime already loaded from %s (providers from %q), cannot load %s (providers from %q) in the same process", env.lib, env.providerDir, abs, provDir)
	}
	root := o.HardwareRoot
	if root == "" {
		root = "/"
	}
	accels, hwErr := accel.Discover(root)
	r := &Runtime{version: env.version, models: map[*Model]struct{}{}, hw: Hardware{Accels: accel.Kinds(accels), Arch: goruntime.GOARCH}}
	r.hwErr = hwErr
	// Looked up where they really are; ONNX Runtime finds them by the links
	// in env.loadDir.
	dirs := []string{filepath.Dir(abs)}
	if provDir != "" && provDir != dirs[0] {
		dirs = []string{provDir, dirs[0]}
	}
	r.avail = availability(r.hw, dirs, tryProvider)
	return r, nil
}

// Hardware is what the runtime found of the machine's accelerators, and
// what went wrong finding them (the probes that failed; the rest count).
func (r *Runtime) Hardware() (Hardware, error) { return r.hw, r.hwErr }

// Unavailable maps each known provider this runtime cannot use to why.
func (r *Runtime) Unavailable() map[string]string {
	out := map[string]string{}
	for name, reason := range r.avail {
		if reason != "" {
			out[name] = reason
		}
	}
	return out
}

func initEnv(lib, providerDir string) (err error) {
	defer recoverInto(&err, "initialize onnxruntime")
	load := lib
	if providerDir != "" && providerDir != filepath.Dir(lib) {
		if load, err = stageProviders(lib, providerDir); err != nil {
			return err
		}
		env.stageDir = filepath.Dir(load)
	}
	ort.SetSharedLibraryPath(load)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("%w: onnxruntime %s: %w (it must be %s or newer)", runtime.ErrUnavailable, lib, err, MinVersion)
	}
	v := ort.GetVersion()
	if !versionAtLeast(v, MinVersion) {
		_ = ort.DestroyEnvironment()
		return fmt.Errorf("%w: onnxruntime %s is version %q, need %s or newer", runtime.ErrUnavailable, lib, v, MinVersion)
	}
	env.lib, env.providerDir, env.version = lib, providerDir, v
	return nil
}

// RemoveStaged removes the private folder of links OpenWith made for
// Options.ProviderDir; a plugin calls it as it exits.
func RemoveStaged() error {
	env.Lock()
	defer env.Unlock()
	if env.stageDir == "" {
		return nil
	}
	err := os.RemoveAll(env.stageDir)
	env.stageDir = ""
	return err
}

// stageProviders makes a private folder holding a link to lib and to every
// shared library in providerDir, and returns the link to lib: ONNX Runtime
// looks for provider libraries beside the path it was loaded from. The
// folder lives as long as the process (the library stays loaded).
func stageProviders(lib, providerDir string) (string, error) {
	entries, err := os.ReadDir(providerDir)
	if err != nil {
		return "", fmt.Errorf("%w: onnx: provider folder: %w", runtime.ErrUnavailable, err)
	}
	stage, err := os.MkdirTemp("", "flotilla-ort-")
	if err != nil {
		return "", fmt.Errorf("onnx: provider folder: %w", err)
	}
	for _, e := range entries {
		if e.IsDir() || !strings.Contains(e.Name(), ".so") || e.Name() == filepath.Base(lib) {
			continue
		}
		if err := os.Symlink(filepath.Join(providerDir, e.Name()), filepath.Join(stage, e.Name())); err != nil {
			return "", fmt.Errorf("onnx: provider folder: %w", err)
		}
	}
	link := filepath.Join(stage, filepath.Base(lib))
	if err := os.Symlink(lib, link); err != nil {
		return "", fmt.Errorf("onnx: provider folder: %w", err)
	}
	return link, nil
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
	for _, p := range Providers {
		if r.avail[p.Name] == "" {
			info.ExecutionProviders = append(info.ExecutionProviders, p.Name)
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
