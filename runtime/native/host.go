package native

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config says where the plugins are and how to run them.
type Config struct {
	// Dir holds the plugin binaries: executable files named
	// flotilla-runtime-*.
	Dir string
	// Env is added to each plugin's environment, e.g.
	// FLOTILLA_ORT_LIB=/opt/flotilla/lib/libonnxruntime.so.1.
	Env []string
	// Logger receives go-plugin's and the plugins' logs; nil logs warnings
	// and errors to stderr.
	Logger hclog.Logger
	// StartTimeout bounds a plugin's start and handshake (default 30 s).
	StartTimeout time.Duration
	// PollInterval is how often a plugin's process is checked for exit
	// (default 100 ms); a failed call checks at once.
	PollInterval time.Duration

	grpcOnly bool // tests and benchmarks: no Infer channels, as with a protocol 1 plugin
}

func (c Config) withDefaults() Config {
	if c.Logger == nil {
		c.Logger = hclog.New(&hclog.LoggerOptions{Name: "runtime", Level: hclog.Warn, Output: os.Stderr})
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 30 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	return c
}

// Host holds the runtime plugins found in a folder.
type Host struct {
	plugins map[string]*Plugin // by runtime name, from Describe
	failed  map[string]error   // by binary path
}

// Discover lists the plugin binaries in dir, sorted.
func Discover(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("native: plugin folder: %w", err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), BinaryPrefix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		out = append(out, filepath.Join(dir, e.Name()))
	}
	sort.Strings(out)
	return out, nil
}

// Open starts every plugin in cfg.Dir. A plugin that fails to start is
// left out and reported by Failed; two plugins claiming one runtime name
// keep the first. Only an unreadable folder is an error.
func Open(ctx context.Context, cfg Config) (*Host, error) {
	cfg = cfg.withDefaults()
	paths, err := Discover(cfg.Dir)
	if err != nil {
		return nil, err
	}
	h := &Host{plugins: map[string]*Plugin{}, failed: map[string]error{}}
	for _, path := range paths {
		p, err := Start(ctx, path, cfg)
		if err != nil {
			cfg.Logger.Error("runtime plugin failed to start", "path", path, "error", err)
			h.failed[path] = err
			continue
		}
		name := p.Name()
		if _, dup := h.plugins[name]; dup {
			_ = p.Close()
			h.failed[path] = fmt.Errorf("native: runtime %q is already served by another plugin", name)
			continue
		}
		h.plugins[name] = p
	}
	return h, nil
}

// Runtime returns the plugin serving the named runtime ("onnx").
func (h *Host) Runtime(name string) (*Plugin, bool) {
	p, ok := h.plugins[name]
	return p, ok
}

// Plugins returns the running plugins, sorted by runtime name.
func (h *Host) Plugins() []*Plugin {
	out := make([]*Plugin, 0, len(h.plugins))
	for _, p := range h.plugins {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Failed maps each plugin binary that did not start to why.
func (h *Host) Failed() map[string]error { return h.failed }

// Close stops every plugin.
func (h *Host) Close() error {
	var errs []error
	for _, p := range h.plugins {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}
