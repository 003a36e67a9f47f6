package wasm

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/abi"
)

// Model is a loaded WASM model: one wazero runtime with the compiled
// module and a pool of its instances.
type Model struct {
	rt       *Runtime
	wr       wazero.Runtime
	compiled wazero.CompiledModule
	spec     runtime.LoadSpec
	memLimit uint64 // bytes
	env      map[string]string
	pool     *pool

	inputs, outputs []runtime.TensorInfo

	closed atomic.Bool
}

var _ runtime.Model = (*Model)(nil)

// Inputs implements runtime.Model; nil when the guest has no describe.
func (m *Model) Inputs() []runtime.TensorInfo { return m.inputs }

// Outputs implements runtime.Model; nil when the guest has no describe.
func (m *Model) Outputs() []runtime.TensorInfo { return m.outputs }

// Infer implements runtime.Model: it validates the inputs, runs the
// guest's infer on a pooled instance and validates what comes back.
func (m *Model) Infer(ctx context.Context, inputs []runtime.Tensor) ([]runtime.Tensor, error) {
	if err := validate(inputs, m.inputs, runtime.ErrInvalidInput, "input"); err != nil {
		return nil, err
	}
	size := abi.TensorsSize(inputs)
	if uint64(size) > m.memLimit/2 {
		return nil, fmt.Errorf("%w: inputs are %d bytes, more than half the guest's %d MiB memory", runtime.ErrInvalidInput, size, m.memLimit>>20)
	}
	if m.closed.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, m.rt.cfg.CallTimeout)
	defer cancel()
	in, err := m.acquire(ctx)
	if err != nil {
		return nil, err
	}
	res, err := in.call(ctx, inputs, size, m.rt.cfg.MaxOutputBytes)
	if in.broken || m.closed.Load() {
		m.discard(in)
	} else {
		m.pool.put(in)
	}
	if err != nil {
		if m.closed.Load() {
			return nil, fmt.Errorf("%w (%v)", ErrClosed, err)
		}
		return nil, err
	}
	var out flotillapb.Tensors
	if err := proto.Unmarshal(res, &out); err != nil {
		return nil, fmt.Errorf("%w: result is not a flotillapb.Tensors: %v", ErrBadOutput, err)
	}
	outputs := fromProto(out.Tensors)
	if err := validate(outputs, m.outputs, ErrBadOutput, "output"); err != nil {
		return nil, err
	}
	return outputs, nil
}

// acquire returns an idle instance or starts a new one.
func (m *Model) acquire(ctx context.Context) (*instance, error) {
	in, err := m.pool.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("wasm: waiting for a free instance: %w", err)
	}
	if in != nil {
		return in, nil
	}
	in, err = m.newInstance(ctx)
	if err != nil {
		m.pool.release()
		if m.closed.Load() {
			return nil, fmt.Errorf("%w (%v)", ErrClosed, err)
		}
		return nil, err
	}
	return in, nil
}

func (m *Model) discard(in *instance) {
	in.close(context.Background())
	m.pool.release()
}

// describe reads the guest's description, if it has a describe export.
func (m *Model) describe(ctx context.Context, in *instance) error {
	ctx, cancel := context.WithTimeout(ctx, m.rt.cfg.CallTimeout)
	defer cancel()
	b, ok, err := in.describe(ctx, m.rt.cfg.MaxOutputBytes)
	if err != nil || !ok {
		return err
	}
	var d flotillapb.LoadResponse
	if err := proto.Unmarshal(b, &d); err != nil {
		return fmt.Errorf("%w: describe result is not a flotillapb.LoadResponse: %v", ErrBadOutput, err)
	}
	if len(d.Inputs)+len(d.Outputs) == 0 {
		return nil // an empty description describes nothing
	}
	m.inputs, m.outputs = infosFromProto(d.Inputs), infosFromProto(d.Outputs)
	return nil
}

// Close implements runtime.Model. Calls in progress fail with ErrClosed.
func (m *Model) Close() error {
	if m.closed.Swap(true) {
		return nil
	}
	ctx := context.Background()
	err := m.wr.Close(ctx) // closes every instance, busy ones too
	m.pool.drain(ctx)
	m.rt.untrack(m)
	return err
}
