//go:build cgo

package native

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// pluginDir holds the real flotilla-runtime-onnx, built by TestMain.
var pluginDir string

func TestMain(m *testing.M) {
	// A machine without a Go toolchain (the GPU machine) runs a test binary
	// built elsewhere, with the plugin built beside it.
	if dir := os.Getenv("FLOTILLA_TEST_PLUGIN_DIR"); dir != "" {
		pluginDir = dir
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "flotilla-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "flotilla-runtime-onnx"), "../../cmd/flotilla-runtime-onnx").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build plugin: %v\n%s", err, out)
		os.Exit(1)
	}
	pluginDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ortLib is $FLOTILLA_ORT_LIB or the library `make deps` caches; missing,
// it fails the test under CI and skips it elsewhere.
func ortLib(t testing.TB) string {
	t.Helper()
	lib := os.Getenv("FLOTILLA_ORT_LIB")
	if lib == "" {
		cache, _ := os.UserCacheDir()
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[runtime.GOARCH]
		lib = filepath.Join(cache, "flotilla", "onnxruntime", "1.30.0", "linux-"+arch, "libonnxruntime.so.1")
	}
	if _, err := os.Stat(lib); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("libonnxruntime not found at %q (run make deps): %v", lib, err)
		}
		t.Skipf("libonnxruntime not found at %q (run make deps)", lib)
	}
	return lib
}

// sharedModel is ../shared/models/<name>, read in place (mobilenet is too
// big for testdata); missing, it fails under CI and skips elsewhere.
func sharedModel(t testing.TB, name string) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "shared", "models", name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "model.onnx")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("model %s missing: %v", name, err)
		}
		t.Skipf("model %s missing: %v", name, err)
	}
	return dir
}

func testConfig(t testing.TB) Config {
	return Config{
		Dir:          pluginDir,
		Env:          []string{"FLOTILLA_ORT_LIB=" + ortLib(t)},
		Logger:       hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
		PollInterval: 20 * time.Millisecond,
	}
}

// startONNX starts the real plugin binary under supervision.
func startONNX(t testing.TB) *Plugin {
	t.Helper()
	p, err := Start(context.Background(), filepath.Join(pluginDir, "flotilla-runtime-onnx"), testConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
