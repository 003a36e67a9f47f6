//go:build cgo

package native

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

// TestProviderSelectionOnFakeH100: the plugin discovers accelerators on
// firmware/accel's recorded H100 tree (a fake root: this machine has no
// GPU) and runs the real CPU library. Asked for CUDA it falls back to CPU
// and names the missing provider library; given a folder of provider
// libraries through config, it picks the library up and hands it to ONNX
// Runtime, whose refusal of the (fake, empty) library becomes the reason.
func TestProviderSelectionOnFakeH100(t *testing.T) {
	root, err := filepath.Abs("../../firmware/accel/testdata/h100")
	if err != nil {
		t.Fatal(err)
	}
	lib := ortLib(t)
	start := func(env ...string) *Plugin {
		cfg := testConfig(t)
		cfg.Env = append(cfg.Env, append([]string{onnx.HardwareRootEnv + "=" + root}, env...)...)
		p, err := Start(context.Background(), filepath.Join(pluginDir, "flotilla-runtime-onnx"), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		return p
	}
	provider := func(p *Plugin, asked ...string) (string, string) {
		t.Helper()
		m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx", Providers: asked})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		if out, err := m.Infer(context.Background(), addInput()); err != nil || f32s(out[0].Data)[0] != 11 {
			t.Fatalf("infer on the fallback: %v %v", out, err)
		}
		return m.(runtime.LoadResult).Provider()
	}

	p := start()
	if eps := p.Describe().ExecutionProviders; !slices.Equal(eps, []string{"cpu"}) {
		t.Errorf("providers %v, want [cpu]", eps)
	}
	name, reason := provider(p, "cuda", "cpu")
	if want := "cuda: CUDA provider library libonnxruntime_providers_cuda.so not present in " + filepath.Dir(lib); name != "cpu" || reason != want {
		t.Errorf("got %q %q\nwant cpu %q", name, reason, want)
	}

	dir := t.TempDir()
	for _, l := range []string{"libonnxruntime_providers_cuda.so", "libonnxruntime_providers_shared.so"} {
		if err := os.WriteFile(filepath.Join(dir, l), must(os.ReadFile("/lib/x86_64-linux-gnu/libz.so.1")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The dynamic loader's own log shows ONNX Runtime opening the library
	// through the private folder of links.
	ldlog := filepath.Join(t.TempDir(), "ld")
	p = start(onnx.ProvidersEnv+"="+dir, "LD_DEBUG=files", "LD_DEBUG_OUTPUT="+ldlog)
	name, reason = provider(p, "cuda", "cpu")
	if want := "cuda: ONNX Runtime cannot use " + filepath.Join(dir, "libonnxruntime_providers_cuda.so") + ": "; name != "cpu" || !strings.HasPrefix(reason, want) {
		t.Errorf("with the provider folder: got %q %q; want ONNX Runtime's refusal, starting %q", name, reason, want)
	}
	t.Logf("reason with the fake provider library: %s", reason)
	logs, _ := filepath.Glob(ldlog + ".*")
	var opened bool
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, "file=") && strings.Contains(line, "flotilla-ort-") && strings.Contains(line, "/libonnxruntime_providers_") {
				opened = true
				t.Logf("loader: %s", strings.TrimSpace(line))
			}
		}
	}
	if !opened {
		t.Errorf("the loader's log (%d files) shows no provider library opened from the private folder", len(logs))
	}
}
