package wasinn_test

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/wasinn"
)

// TestErrorPaths has the nnprobe guest misuse the ABI; the backend is the
// real wasm runtime running the mlp guest as the graph.
func TestErrorPaths(t *testing.T) {
	dir := slotWith(t, map[string]string{"probe.wasm": guests["nnprobe"], "model.wasm": guests["mlp"]})
	m := load(t, frontend(t, wasmBackend(t)), runtime.LoadSpec{Dir: dir, Entry: "probe.wasm"})
	for probe, want := range []wasinn.Errno{
		0:  wasinn.Success,
		1:  wasinn.InvalidArgument, // name pointer outside memory
		2:  wasinn.NotFound,        // no such file in the slot
		3:  wasinn.InvalidArgument, // a name that leaves the slot
		4:  wasinn.InvalidArgument, // bad graph handle
		5:  wasinn.InvalidArgument, // u8 tensor for a float32 input
		6:  wasinn.InvalidArgument, // bad context handle
		7:  wasinn.InvalidArgument, // tensor record outside memory
		8:  wasinn.InvalidArgument, // get_output before compute
		9:  wasinn.TooLarge,        // output buffer too small
		10: wasinn.InvalidArgument, // compute with an input unset
		11: wasinn.InvalidEncoding, // tensorflow
		12: wasinn.InvalidArgument, // output buffer outside memory
		13: wasinn.InvalidArgument, // wrong shape
		14: wasinn.InvalidArgument, // input index out of range
		15: wasinn.RuntimeError,    // bytes that are no model
	} {
		in := runtime.Tensor{Name: "probe", DType: runtime.Int32, Data: binary.LittleEndian.AppendUint32(nil, uint32(probe))}
		out, err := m.Infer(context.Background(), []runtime.Tensor{in})
		if err != nil {
			t.Errorf("probe %d: %v", probe, err)
			continue
		}
		if got := wasinn.Errno(binary.LittleEndian.Uint32(out[0].Data)); got != want {
			t.Errorf("probe %d: errno %d, want %d", probe, got, want)
		}
	}
}

// TestNNMatchesBackend runs the nndigits guest, whose graph is the mlp
// model run by the wasm backend, against the same model loaded directly.
func TestNNMatchesBackend(t *testing.T) {
	backend := wasmBackend(t)
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nndigits"], "model.wasm": guests["mlp"]})
	nn := load(t, frontend(t, backend), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm", Options: map[string]string{"env.FLOTILLA_NN_MODEL": "model.wasm"}})
	direct := load(t, backend, runtime.LoadSpec{Dir: dir, Entry: "model.wasm"})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 3 {
				rows := 1 + (g+i)%3
				x := make([]float32, rows*64)
				for j := range x {
					x[j] = float32((j*7+g*13+i)%17) / 17
				}
				in := []runtime.Tensor{f32Tensor("pixels", []int64{int64(rows), 64}, x)}
				got, err := nn.Infer(context.Background(), in)
				if err != nil {
					t.Error(err)
					return
				}
				want, err := direct.Infer(context.Background(), in)
				if err != nil {
					t.Error(err)
					return
				}
				if !slices.Equal(got[0].Shape, want[0].Shape) || !slices.Equal(f32s(got[0].Data), f32s(want[0].Data)) {
					t.Errorf("through wasi-nn %v %v, direct %v %v", got[0].Shape, f32s(got[0].Data), want[0].Shape, f32s(want[0].Data))
				}
			}
		})
	}
	wg.Wait()
}

// restartingBackend is a fake named so: it wraps the real wasm runtime
// and makes its models fail once with ErrUnavailable, as models of a
// native plugin do while the plugin restarts (the wasm runtime has no
// plugin process to kill).
type restartingBackend struct {
	runtime.Runtime
	loads atomic.Int32
	fail  atomic.Bool
}

func (b *restartingBackend) Load(ctx context.Context, spec runtime.LoadSpec) (runtime.Model, error) {
	b.loads.Add(1)
	m, err := b.Runtime.Load(ctx, spec)
	if err != nil {
		return nil, err
	}
	return &restartingModel{Model: m, b: b}, nil
}

type restartingModel struct {
	runtime.Model
	b *restartingBackend
}

func (m *restartingModel) Infer(ctx context.Context, in []runtime.Tensor) ([]runtime.Tensor, error) {
	if m.b.fail.Swap(false) {
		return nil, runtime.ErrUnavailable
	}
	return m.Model.Infer(ctx, in)
}

func TestGraphRecreatedAfterUnavailable(t *testing.T) {
	backend := &restartingBackend{Runtime: wasmBackend(t)}
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nndigits"], "model.wasm": guests["mlp"]})
	nn := load(t, frontend(t, backend), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm", Options: map[string]string{"env.FLOTILLA_NN_MODEL": "model.wasm"}})
	in := []runtime.Tensor{f32Tensor("pixels", []int64{1, 64}, make([]float32, 64))}
	before, err := nn.Infer(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	backend.fail.Store(true)
	after, err := nn.Infer(context.Background(), in)
	if err != nil {
		t.Fatalf("after the backend restarted: %v", err)
	}
	if n := backend.loads.Load(); n != 2 {
		t.Fatalf("backend loads = %d, want 2 (the graph re-created once)", n)
	}
	if !slices.Equal(before[0].Data, after[0].Data) {
		t.Fatal("outputs changed after the graph was re-created")
	}
}

func TestUnboundCallsRefused(t *testing.T) {
	// A guest importing wasi_ephemeral_nn from a runtime without the
	// module is refused at load, with a clear error.
	dir := slotWith(t, map[string]string{"nn.wasm": guests["nndigits"]})
	_, err := wasmBackend(t).Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: "nn.wasm"})
	if !errors.Is(err, runtime.ErrUnsupported) {
		t.Fatalf("err = %v, want ErrUnsupported", err)
	}
}
