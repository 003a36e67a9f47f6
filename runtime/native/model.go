package native

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Model is a model loaded in a plugin process. It implements runtime.Model
// and runtime.LoadResult. After a plugin restart it is reloaded by itself;
// until then Infer fails with runtime.ErrUnavailable.
type Model struct {
	p    *Plugin
	spec runtime.LoadSpec

	mu              sync.RWMutex
	gen             uint64 // the process generation id belongs to
	id              string
	inputs, outputs []runtime.TensorInfo
	provider        string
	fallback        string
	outBytes        int   // channel buffer the static outputs take
	reloadErr       error // why the last reload failed
	closed          bool
}

var (
	_ runtime.Model      = (*Model)(nil)
	_ runtime.LoadResult = (*Model)(nil)
)

// attach binds the model to its id on process generation gen.
func (m *Model) attach(gen uint64, resp *flotillapb.LoadResponse, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reloadErr = err
	if err != nil {
		return
	}
	m.gen, m.id = gen, resp.GetModelId()
	m.inputs, m.outputs = infosFromProto(resp.GetInputs()), infosFromProto(resp.GetOutputs())
	m.provider, m.fallback = resp.GetProvider(), resp.GetFallbackReason()
	m.outBytes = outputBytes(m.outputs)
}

// Inputs describes the model's inputs.
func (m *Model) Inputs() []runtime.TensorInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.inputs
}

// Outputs describes the model's outputs.
func (m *Model) Outputs() []runtime.TensorInfo {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.outputs
}

// Provider is the execution provider the plugin chose and why it fell back.
func (m *Model) Provider() (name, fallbackReason string) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.provider, m.fallback
}

// Available says whether the model can run now, and if not, why.
func (m *Model) Available() error {
	_, _, _, err := m.target()
	return err
}

func (m *Model) target() (c conn, id string, outBytes int, err error) {
	c, err = m.p.current()
	if err != nil {
		return c, "", 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	switch {
	case m.closed:
		return c, "", 0, fmt.Errorf("%w: model closed", runtime.ErrUnavailable)
	case m.reloadErr != nil:
		return c, "", 0, fmt.Errorf("%w: reload after a plugin restart failed: %w", runtime.ErrUnavailable, m.reloadErr)
	case m.gen != c.gen:
		return c, "", 0, fmt.Errorf("%w: model %s is reloading after a plugin restart", runtime.ErrUnavailable, m.spec.Entry)
	}
	return c, m.id, m.outBytes, nil
}

// Infer runs the model in the plugin process: over an Infer channel when
// the plugin speaks protocol 2, else over gRPC.
func (m *Model) Infer(ctx context.Context, inputs []runtime.Tensor) ([]runtime.Tensor, error) {
	c, id, outBytes, err := m.target()
	if err != nil {
		return nil, err
	}
	if c.chans != nil && channelable(inputs) {
		return m.inferChannel(ctx, c.chans, id, inputs, outBytes)
	}
	resp, err := c.rpc.Infer(ctx, &flotillapb.InferRequest{ModelId: id, Inputs: tensorsToProto(inputs)})
	if err != nil {
		if status.Code(err) == codes.Unavailable {
			m.p.kickSupervisor()
		}
		return nil, fmt.Errorf("native: infer: %w", fromStatus(err))
	}
	return tensorsFromProto(resp.GetOutputs()), nil
}

func (m *Model) inferChannel(ctx context.Context, cs *channels, id string, inputs []runtime.Tensor, outBytes int) ([]runtime.Tensor, error) {
	ch, err := cs.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("native: infer: %w", ctx.Err())
		}
		m.p.kickSupervisor()
		return nil, fmt.Errorf("native: infer: %w: %w", runtime.ErrUnavailable, err)
	}
	out, callErr, ioErr := ch.infer(ctx, id, inputs, outBytes)
	cs.put(ch, ioErr != nil)
	switch {
	case ioErr != nil && ctx.Err() != nil:
		return nil, fmt.Errorf("native: infer: %w", ctx.Err())
	case ioErr != nil:
		m.p.kickSupervisor()
		return nil, fmt.Errorf("native: infer: %w: channel: %w", runtime.ErrUnavailable, ioErr)
	case callErr != nil:
		return nil, fmt.Errorf("native: infer: %w", callErr)
	}
	return out, nil
}

// Close unloads the model from the plugin.
func (m *Model) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	id, gen := m.id, m.gen
	m.mu.Unlock()
	m.p.mu.Lock()
	delete(m.p.models, m)
	m.p.mu.Unlock()
	c, err := m.p.current()
	if err != nil || c.gen != gen {
		return nil // the process that held it is gone
	}
	if _, err := c.rpc.Unload(context.Background(), &flotillapb.UnloadRequest{ModelId: id}); err != nil {
		return fmt.Errorf("native: unload: %w", fromStatus(err))
	}
	return nil
}

// fromStatus maps gRPC codes back to the runtime's sentinel errors.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	var sentinel error
	switch s.Code() {
	case codes.InvalidArgument, codes.NotFound:
		sentinel = runtime.ErrInvalidInput
	case codes.Unimplemented:
		sentinel = runtime.ErrUnsupported
	case codes.Unavailable:
		sentinel = runtime.ErrUnavailable
	case codes.Canceled:
		sentinel = context.Canceled
	case codes.DeadlineExceeded:
		sentinel = context.DeadlineExceeded
	default:
		return fmt.Errorf("%s", s.Message())
	}
	return fmt.Errorf("%w: %s", sentinel, strings.TrimPrefix(s.Message(), sentinel.Error()+": "))
}
