//go:build cgo

package native

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

func addInput() []runtime.Tensor {
	return []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: f32bytes([]float32{1, 2})}}
}

// TestPluginCrashRestarts kills the plugin process while calls are in
// flight: every failed call says ErrUnavailable, the crash is counted, and
// the same Model works again once the plugin is back, without reloading it
// by hand.
func TestPluginCrashRestarts(t *testing.T) {
	p := startONNX(t)
	ctx := context.Background()
	m, err := p.Load(ctx, runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Infer(ctx, addInput()); err != nil {
		t.Fatal(err)
	}
	pid := p.Pid()
	if pid == 0 {
		t.Fatal("no pid")
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, unavailable atomic.Int64
	errs := make(chan error, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, err := m.Infer(ctx, addInput())
				switch {
				case err == nil:
					ok.Add(1)
				case errors.Is(err, runtime.ErrUnavailable):
					unavailable.Add(1)
					time.Sleep(time.Millisecond)
				default:
					errs <- err
					return
				}
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The next call right after the kill cannot have been served.
	if _, err := m.Infer(ctx, addInput()); !errors.Is(err, runtime.ErrUnavailable) {
		t.Errorf("infer right after the kill: got %v, want ErrUnavailable", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Crashes() < 1 || m.(*Model).Available() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not back after 30 s: crashes %d, %v", p.Crashes(), m.(*Model).Available())
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := ok.Load()
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a call failed with something other than ErrUnavailable: %v", err)
	}
	if ok.Load() == before {
		t.Error("no call succeeded after the restart")
	}
	if p.Crashes() != 1 || p.Pid() == pid || p.Pid() == 0 {
		t.Fatalf("crashes %d, pid %d (was %d)", p.Crashes(), p.Pid(), pid)
	}
	out, err := m.Infer(ctx, addInput())
	if err != nil || f32s(out[0].Data)[1] != 22 {
		t.Fatalf("after restart: %v %v", out, err)
	}
	t.Logf("calls: %d ok, %d unavailable", ok.Load(), unavailable.Load())
}

// TestInProcessGRPC serves runtime/onnx over go-plugin's in-process gRPC
// connection: the real service and codec, no process.
func TestInProcessGRPC(t *testing.T) {
	rt, err := onnx.Open(ortLib(t))
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	client, server := plugin.TestPluginGRPCConn(t, false, map[string]plugin.Plugin{pluginName: &GRPCPlugin{Impl: rt}})
	defer client.Close()
	defer server.Stop()
	raw, err := client.Dispense(pluginName)
	if err != nil {
		t.Fatal(err)
	}
	rpc := raw.(flotillapb.RuntimeClient)
	ctx := context.Background()
	d, err := rpc.Describe(ctx, &flotillapb.DescribeRequest{})
	if err != nil || d.GetName() != "onnx" || d.GetProtocolVersion() != ProtocolVersion {
		t.Fatalf("describe: %v %v", d, err)
	}
	l, err := rpc.Load(ctx, &flotillapb.LoadRequest{Dir: "../onnx/testdata", Entry: "add.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := rpc.Infer(ctx, &flotillapb.InferRequest{ModelId: l.GetModelId(), Inputs: tensorsToProto(addInput())})
	if err != nil || f32s(resp.GetOutputs()[0].GetData())[0] != 11 {
		t.Fatalf("infer: %v %v", resp, err)
	}
	if _, err := rpc.Infer(ctx, &flotillapb.InferRequest{ModelId: "nope"}); !errors.Is(fromStatus(err), runtime.ErrInvalidInput) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := rpc.Unload(ctx, &flotillapb.UnloadRequest{ModelId: l.GetModelId()}); err != nil {
		t.Fatal(err)
	}
	if _, err := rpc.Infer(ctx, &flotillapb.InferRequest{ModelId: l.GetModelId()}); err == nil {
		t.Fatal("infer after unload worked")
	}
}
