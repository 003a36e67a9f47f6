//go:build cgo

package onnx

import (
	"fmt"
	"maps"

	ort "github.com/yalue/onnxruntime_go"
)

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
	avail := maps.Clone(r.avail)
	for {
		chosen, fallback = choose(asked, avail)
		if chosen == "cpu" {
			return chosen, fallback
		}
		err := appendProvider(opts, chosen)
		if err == nil {
			return chosen, fallback
		}
		avail[chosen] = err.Error() // and try the next one asked for
	}
}
