package inferapi

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// pluginDir holds the real flotilla-runtime-onnx, built by TestMain.
var pluginDir string

func TestMain(m *testing.M) {
	if os.Getenv(loadClientEnv) != "" {
		os.Exit(runLoadClient())
	}
	// A machine without a Go toolchain (the GPU machine) runs a test binary
	// built elsewhere, with the plugin built beside it.
	if dir := os.Getenv("FLOTILLA_TEST_PLUGIN_DIR"); dir != "" {
		pluginDir = dir
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "inferapi-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = dir
	if out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "flotilla-runtime-onnx"), "../../cmd/flotilla-runtime-onnx").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build plugin: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
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
		arch := map[string]string{"amd64": "x64", "arm64": "arm64"}[goruntime.GOARCH]
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

func onnxPlugin(t testing.TB) *native.Plugin {
	t.Helper()
	p, err := native.Start(context.Background(), filepath.Join(pluginDir, "flotilla-runtime-onnx"), native.Config{
		Env:    []string{"FLOTILLA_ORT_LIB=" + ortLib(t)},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type chunks map[[32]byte][]byte

func (c chunks) PutChunk(sum [32]byte, data []byte) error {
	c[sum] = append([]byte(nil), data...)
	return nil
}

func (c chunks) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	if b, ok := c[sum]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("chunk missing")
}

// activate builds the bundle folder src (controlplane/bundle), and
// installs it through a real lifecycle on rt, as the agent does.
func activate(t testing.TB, rt runtime.Runtime, src string) *lifecycle.Lifecycle {
	t.Helper()
	ctx := context.Background()
	cs := chunks{}
	raw, _, err := bundle.Build(src, bundle.Options{Chunks: cs})
	if err != nil {
		t.Fatal(err)
	}
	m := &flotillapb.BundleManifest{}
	if err := wire.Decode(raw, flotillapb.MaxManifestSize, m); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db, err := state.Open(ctx, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := lifecycle.Open(ctx, lifecycle.Config{Dir: filepath.Join(dir, "models"), Store: db, Runtimes: lifecycle.RuntimeList{rt}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	slot, err := l.PrepareSlot(ctx, m.GetName(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unpack.Unpack(ctx, cs, m, slot, unpack.Limits{}); err != nil {
		t.Fatal(err)
	}
	if err := l.Stage(ctx, raw); err != nil {
		t.Fatal(err)
	}
	return l
}

// serve runs s on a loopback TCP port and a unix socket; it returns an
// HTTP client for each and the TCP base URL.
func serve(t testing.TB, s *Server) (tcp, unix *http.Client, base string) {
	t.Helper()
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "infer.sock")
	ul, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, tl, ul) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return")
		}
	})
	unix = &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &http.Client{}, unix, "http://" + tl.Addr().String()
}
