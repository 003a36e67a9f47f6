//go:build cgo

package onnx

import (
	"context"
	"fmt"
	"strconv"
	"sync"

	ort "github.com/yalue/onnxruntime_go"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Model is a model loaded in ONNX Runtime. It implements runtime.Model and
// runtime.LoadResult; Infer is safe for concurrent use.
type Model struct {
	sess            *ort.DynamicAdvancedSession
	inputs, outputs []runtime.TensorInfo
	provider        string
	fallback        string
	release         func()

	mu     sync.RWMutex // Infer holds it shared, Close exclusively
	closed bool
}

var (
	_ runtime.Model      = (*Model)(nil)
	_ runtime.LoadResult = (*Model)(nil)
)

// Options a bundle variant may set.
const (
	OptIntraOpThreads = "intra_op_threads"
	OptInterOpThreads = "inter_op_threads"
)

func (r *Runtime) load(spec runtime.LoadSpec) (m *Model, err error) {
	defer recoverInto(&err, "load")
	path, err := slotFile(spec.Dir, spec.Entry)
	if err != nil {
		return nil, err
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("onnx: session options: %w", err)
	}
	defer opts.Destroy()
	if err := applyOptions(opts, spec.Options); err != nil {
		return nil, err
	}
	chosen, fallback := r.selectProviders(opts, spec.Providers)

	ins, outs, err := ort.GetInputOutputInfoWithOptions(path, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: onnx: load %s: %w", runtime.ErrInvalidInput, spec.Entry, err)
	}
	m = &Model{provider: chosen, fallback: fallback}
	inNames, err := tensorInfos(ins, &m.inputs)
	if err != nil {
		return nil, err
	}
	outNames, err := tensorInfos(outs, &m.outputs)
	if err != nil {
		return nil, err
	}
	if len(outNames) == 0 {
		return nil, fmt.Errorf("%w: onnx: model %s has no outputs", runtime.ErrInvalidInput, spec.Entry)
	}
	m.sess, err = ort.NewDynamicAdvancedSession(path, inNames, outNames, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: onnx: load %s: %w", runtime.ErrInvalidInput, spec.Entry, err)
	}
	return m, nil
}

func applyOptions(opts *ort.SessionOptions, o map[string]string) error {
	for k, v := range o {
		var set func(int) error
		switch k {
		case OptIntraOpThreads:
			set = opts.SetIntraOpNumThreads
		case OptInterOpThreads:
			set = opts.SetInterOpNumThreads
		default:
			return fmt.Errorf("%w: onnx: unknown option %q", runtime.ErrInvalidInput, k)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: onnx: option %s=%q is not a thread count", runtime.ErrInvalidInput, k, v)
		}
		if err := set(n); err != nil {
			return fmt.Errorf("onnx: option %s: %w", k, err)
		}
	}
	return nil
}

// tensorInfos converts the wrapper's descriptions; inputs and outputs that
// are not tensors (sequences, maps) are unsupported.
func tensorInfos(in []ort.InputOutputInfo, dst *[]runtime.TensorInfo) ([]string, error) {
	names := make([]string, len(in))
	for i, io := range in {
		if io.OrtValueType != ort.ONNXTypeTensor {
			return nil, fmt.Errorf("%w: onnx: %q is a %v, only tensors are supported", runtime.ErrUnsupported, io.Name, io.OrtValueType)
		}
		names[i] = io.Name
		*dst = append(*dst, runtime.TensorInfo{Name: io.Name, DType: runtime.DType(io.DataType), Shape: []int64(io.Dimensions.Clone())})
	}
	return names, nil
}

// Inputs describes the model's inputs, in the model's order.
func (m *Model) Inputs() []runtime.TensorInfo { return m.inputs }

// Outputs describes the model's outputs, in the model's order.
func (m *Model) Outputs() []runtime.TensorInfo { return m.outputs }

// Provider is the execution provider the model runs on and why the ones
// asked before it were skipped.
func (m *Model) Provider() (name, fallbackReason string) { return m.provider, m.fallback }

// Close releases the session; Infer afterwards fails with ErrUnavailable.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.release != nil {
		m.release()
	}
	return m.sess.Destroy()
}

// Infer runs the model. inputs are matched to the model's by name, each
// exactly once; outputs come back in the model's order.
func (m *Model) Infer(ctx context.Context, inputs []runtime.Tensor) (out []runtime.Tensor, err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return nil, fmt.Errorf("%w: model closed", runtime.ErrUnavailable)
	}
	defer recoverInto(&err, "infer")
	ordered, err := m.order(inputs)
	if err != nil {
		return nil, err
	}
	var values []ort.Value
	defer func() {
		for _, v := range values {
			if v != nil {
				_ = v.Destroy()
			}
		}
	}()
	ins := make([]ort.Value, len(ordered))
	for i, t := range ordered {
		if ins[i], err = toValue(t); err != nil {
			return nil, err
		}
		values = append(values, ins[i])
	}
	outs := make([]ort.Value, len(m.outputs))
	for i, info := range m.outputs {
		if outs[i], err = preallocate(info); err != nil {
			return nil, err
		}
		if outs[i] != nil {
			values = append(values, outs[i])
		}
	}
	if len(ins) == 0 {
		err = m.runBound(outs)
	} else {
		err = m.sess.Run(ins, outs)
	}
	for _, v := range outs { // the wrapper's own allocations too
		if v != nil && !contains(values, v) {
			values = append(values, v)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("onnx: run: %w", err)
	}
	out = make([]runtime.Tensor, len(outs))
	for i, v := range outs {
		if out[i], err = fromValue(m.outputs[i], v); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// runBound runs a model with no inputs through an I/O binding, since the
// wrapper's Run cannot take an empty input list. Every output must have
// been preallocated (a model with no inputs has static output shapes).
func (m *Model) runBound(outs []ort.Value) error {
	b, err := m.sess.CreateIoBinding()
	if err != nil {
		return err
	}
	defer b.Destroy()
	for i, v := range outs {
		if v == nil {
			return fmt.Errorf("%w: onnx: output %q of a model with no inputs has no static shape", runtime.ErrUnsupported, m.outputs[i].Name)
		}
		if err := b.BindOutput(m.outputs[i].Name, v); err != nil {
			return err
		}
	}
	return m.sess.RunWithBinding(b)
}

// order matches the given tensors to the model's inputs and checks them.
func (m *Model) order(inputs []runtime.Tensor) ([]runtime.Tensor, error) {
	if len(inputs) != len(m.inputs) {
		return nil, fmt.Errorf("%w: model takes %d inputs, got %d", runtime.ErrInvalidInput, len(m.inputs), len(inputs))
	}
	out := make([]runtime.Tensor, len(m.inputs))
	seen := make([]bool, len(m.inputs))
	for _, t := range inputs {
		i := m.inputIndex(t.Name)
		if i < 0 {
			return nil, fmt.Errorf("%w: model has no input %q", runtime.ErrInvalidInput, t.Name)
		}
		if seen[i] {
			return nil, fmt.Errorf("%w: input %q given twice", runtime.ErrInvalidInput, t.Name)
		}
		seen[i] = true
		info := m.inputs[i]
		if t.DType != info.DType {
			return nil, fmt.Errorf("%w: input %q is %v, model wants %v", runtime.ErrInvalidInput, t.Name, t.DType, info.DType)
		}
		if !shapeFits(t.Shape, info.Shape) {
			return nil, fmt.Errorf("%w: input %q has shape %v, model wants %v", runtime.ErrInvalidInput, t.Name, t.Shape, info.Shape)
		}
		if err := t.Validate(); err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func (m *Model) inputIndex(name string) int {
	for i, in := range m.inputs {
		if in.Name == name {
			return i
		}
	}
	return -1
}

// shapeFits: same rank, and every static dimension equal.
func shapeFits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i, d := range want {
		if d >= 0 && got[i] != d {
			return false
		}
	}
	return true
}

func contains(vs []ort.Value, v ort.Value) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}
