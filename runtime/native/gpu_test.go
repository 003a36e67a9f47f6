//go:build gpu && cgo

package native

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/firmware/accel"
	"github.com/flotilla-edge/flotilla/runtime"
)

// TestCUDAOnRealGPU runs where an NVIDIA GPU is at hand, never in CI:
//
//	go test -tags gpu -run CUDAOnRealGPU ./runtime/native
//
// It finds the GPU through firmware/accel on the real /proc, /sys and /dev,
// starts the real plugin on them, and asks for CUDA. Either the model runs
// on CUDA, or the fallback reason names the provider library precisely:
// missing from the library's folder, or present and refused by ONNX
// Runtime (its CUDA, cuDNN or cuBLAS libraries missing, say).
func TestCUDAOnRealGPU(t *testing.T) {
	found, err := accel.Discover("/")
	t.Logf("accel.Discover(/) = %v (err %v)", found, err)
	if !slices.Contains(accel.Kinds(found), accel.KindCUDA) {
		t.Fatalf("no usable NVIDIA GPU found on / (kinds %v): this test needs one", accel.Kinds(found))
	}
	p := startONNX(t) // hardware root "/": the plugin discovers the GPU itself
	t.Logf("plugin: %+v, protocol %d", p.Describe(), p.ProtocolVersion())
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx", Providers: []string{"cuda", "cpu"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	name, reason := m.(runtime.LoadResult).Provider()
	t.Logf("provider %q, fallback reason %q", name, reason)
	out, err := m.Infer(context.Background(), addInput())
	if err != nil || f32s(out[0].Data)[1] != 22 {
		t.Fatalf("infer on %s: %v %v", name, out, err)
	}

	libDir := filepath.Dir(ortLib(t))
	const provLib = "libonnxruntime_providers_cuda.so"
	_, statErr := os.Stat(filepath.Join(libDir, provLib))
	switch {
	case name == "cuda":
		if !slices.Contains(p.Describe().ExecutionProviders, "cuda") {
			t.Errorf("ran on CUDA but Describe lists %v", p.Describe().ExecutionProviders)
		}
	case statErr != nil:
		if want := "cuda: CUDA provider library " + provLib + " not present in " + libDir; reason != want {
			t.Errorf("fallback reason %q, want %q", reason, want)
		}
	default:
		if want := "cuda: ONNX Runtime cannot use " + filepath.Join(libDir, provLib) + ": "; !strings.HasPrefix(reason, want) {
			t.Errorf("fallback reason %q, want it to start %q", reason, want)
		}
	}
}
