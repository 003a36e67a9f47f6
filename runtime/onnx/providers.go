//go:build cgo

package onnx

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// provider is an execution provider this package knows how to ask ONNX
// Runtime for, and why it cannot be used here ("" when it can).
type provider struct {
	name   string
	lib    string // the provider library ONNX Runtime loads from its own folder
	reason string
}

// knownProviders, best first. CPU is built into every library and always
// comes last.
var knownProviders = []provider{
	{name: "tensorrt", lib: "libonnxruntime_providers_tensorrt.so"},
	{name: "cuda", lib: "libonnxruntime_providers_cuda.so"},
	{name: "openvino", lib: "libonnxruntime_providers_openvino.so"},
	{name: "qnn", lib: "libQnnHtp.so"},
	{name: "coreml"},
}

// probeProviders reports which providers the library in libDir can use:
// the provider library must sit beside libonnxruntime (where ONNX Runtime
// looks for it) and ONNX Runtime must accept the provider in a session's
// options.
func probeProviders(libDir string) []provider {
	out := make([]provider, 0, len(knownProviders))
	for _, p := range knownProviders {
		switch {
		case p.lib == "":
			p.reason = "not available on this operating system"
		default:
			if _, err := os.Stat(filepath.Join(libDir, p.lib)); err != nil {
				p.reason = "provider library not present"
				break
			}
			if err := tryProvider(p.name); err != nil {
				p.reason = err.Error()
			}
		}
		out = append(out, p)
	}
	return out
}

// tryProvider appends the provider to throwaway session options.
func tryProvider(name string) (err error) {
	defer recoverInto(&err, "probe provider "+name)
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return err
	}
	defer opts.Destroy()
	return appendProvider(opts, name)
}

func appendProvider(opts *ort.SessionOptions, name string) error {
	switch name {
	case "cuda":
		c, err := ort.NewCUDAProviderOptions()
		if err != nil {
			return err
		}
		defer c.Destroy()
		return opts.AppendExecutionProviderCUDA(c)
	case "tensorrt":
		t, err := ort.NewTensorRTProviderOptions()
		if err != nil {
			return err
		}
		defer t.Destroy()
		return opts.AppendExecutionProviderTensorRT(t)
	case "openvino":
		return opts.AppendExecutionProviderOpenVINO(map[string]string{})
	case "qnn":
		return opts.AppendExecutionProvider("QNN", map[string]string{"backend_path": "libQnnHtp.so"})
	}
	return fmt.Errorf("unknown execution provider")
}

// selectProviders appends to opts the first provider asked for that this
// library can use, and returns its name ("cpu" when none) and why the ones
// asked before it were skipped.
func (r *Runtime) selectProviders(opts *ort.SessionOptions, asked []string) (chosen, fallback string) {
	var reasons []string
	for _, name := range asked {
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "cpu" {
			break
		}
		p, ok := r.provider(name)
		switch {
		case !ok:
			reasons = append(reasons, name+": unknown execution provider")
			continue
		case p.reason != "":
			reasons = append(reasons, name+": "+p.reason)
			continue
		}
		if err := appendProvider(opts, name); err != nil {
			reasons = append(reasons, name+": "+err.Error())
			continue
		}
		return name, strings.Join(reasons, "; ")
	}
	return "cpu", strings.Join(reasons, "; ")
}

func (r *Runtime) provider(name string) (provider, bool) {
	for _, p := range r.providers {
		if p.name == name {
			return p, true
		}
	}
	return provider{}, false
}
