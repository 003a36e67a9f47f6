package agent

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
)

// runtimes is the lifecycle's Runtimes, started on first need: a native
// plugin (PluginDir/flotilla-runtime-<name>) when a model first asks for
// its runtime, the wasm runtime likewise. An agent with no model starts
// no process and compiles nothing. A plugin dropped into the folder later
// is found by the next lookup; one that failed to start is tried again
// only once its file changes.
type runtimes struct {
	dir  string   // plugin folder; "" = no native runtimes
	env  []string // added to every plugin's environment
	log  *slog.Logger
	wcfg wasm.Config

	mu      sync.Mutex
	plugins map[string]*native.Plugin // by runtime name
	failed  map[string]failure        // by binary path
	wasm    *wasm.Runtime
	closed  bool
}

// failure remembers a plugin that did not start, and the file it was.
type failure struct {
	mod time.Time
	err error
}

func newRuntimes(dir string, env []string, wcfg wasm.Config, log *slog.Logger) *runtimes {
	return &runtimes{dir: dir, env: env, wcfg: wcfg, log: log, plugins: map[string]*native.Plugin{}, failed: map[string]failure{}}
}

// Lookup implements lifecycle.Runtimes.
func (r *runtimes) Lookup(name string) (runtime.Runtime, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, false
	}
	if name == "wasm" {
		return r.wasmRuntime()
	}
	if p, ok := r.plugins[name]; ok {
		return p, true
	}
	if r.dir == "" || name == "" || strings.ContainsAny(name, `/\`) {
		return nil, false
	}
	path := filepath.Join(r.dir, native.BinaryPrefix+name)
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return nil, false
	}
	if f, ok := r.failed[path]; ok && f.mod.Equal(fi.ModTime()) {
		return nil, false
	}
	p, err := r.start(path)
	if err != nil {
		r.failed[path] = failure{mod: fi.ModTime(), err: err}
		r.log.Error("runtime plugin failed to start", "path", path, "err", err)
		return nil, false
	}
	delete(r.failed, path)
	if got := p.Name(); got != name {
		// The binary's name promised another runtime: keep it under the
		// name it serves, and answer this lookup with nothing.
		r.log.Warn("runtime plugin serves another runtime than its file name says", "path", path, "serves", got)
		if _, dup := r.plugins[got]; dup {
			_ = p.Close()
		} else {
			r.plugins[got] = p
		}
		return nil, false
	}
	r.plugins[name] = p
	r.log.Info("runtime plugin started", "runtime", name, "path", path, "version", p.Describe().Version)
	return p, true
}

func (r *runtimes) start(path string) (*native.Plugin, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return native.Start(ctx, path, native.Config{Env: r.env, Logger: hclogFor(r.log)})
}

func (r *runtimes) wasmRuntime() (runtime.Runtime, bool) {
	if r.wasm != nil {
		return r.wasm, true
	}
	w, err := wasm.New(r.wcfg)
	if err != nil {
		r.log.Error("wasm runtime unavailable", "err", err)
		return nil, false
	}
	r.wasm = w
	return w, true
}

// Available lists the runtimes a model may ask for now: the plugins in
// the folder (started or not) and wasm, sorted.
func (r *runtimes) Available() []string { return runtimeNames(r.dir) }

// pluginChanged is told of a change to a file in the plugin folder: a new
// binary is available to the next lookup; a failed one is tried again.
func (r *runtimes) pluginChanged(path string) {
	base := filepath.Base(path)
	if !strings.HasPrefix(base, native.BinaryPrefix) {
		return
	}
	name := strings.TrimPrefix(base, native.BinaryPrefix)
	r.mu.Lock()
	delete(r.failed, path)
	_, running := r.plugins[name]
	r.mu.Unlock()
	fi, err := os.Stat(path)
	switch {
	case err != nil:
		r.log.Info("runtime plugin removed from the plugin folder", "runtime", name, "path", path, "running", running)
	case running:
		r.log.Info("runtime plugin file changed; the running process is kept until the agent restarts", "runtime", name, "path", path)
	case fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0:
		r.log.Info("runtime plugin available", "runtime", name, "path", path)
	}
}

// Close stops every plugin and the wasm runtime.
func (r *runtimes) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	var errs []error
	for _, p := range r.plugins {
		errs = append(errs, p.Close())
	}
	if r.wasm != nil {
		errs = append(errs, r.wasm.Close())
	}
	return errors.Join(errs...)
}

// hclogFor sends go-plugin's logs (warnings and worse) to the agent's
// logger.
func hclogFor(log *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "runtime", Level: hclog.Warn, Output: slogWriter{log}, DisableTime: true})
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.log.Warn(strings.TrimRight(string(p), "\n"), "component", "runtime-plugin")
	return len(p), nil
}
