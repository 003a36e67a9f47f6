package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
)

// Built by TestMain: the real ONNX plugin, the misbehave WASM guest and
// the crash-test driver.
var (
	pluginDir    string
	misbehaveBin string
	driverBin    string
	wasmCache    string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "lifecycle-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	pluginDir = filepath.Join(dir, "plugins")
	misbehaveBin = filepath.Join(dir, "misbehave.wasm")
	driverBin = filepath.Join(dir, "crashtest")
	wasmCache = filepath.Join(dir, "wasm-cache")
	// wazero names its cache folder after the version it reads from the
	// build info, which a test binary lacks ("dev"); the warming helper is
	// built to name it alike, so this binary finds what it compiled.
	wv, err := wazeroCacheVersion(wasmCache)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	warm := filepath.Join(dir, "wasmwarm")
	// Two go commands at once: the host binaries (linked in parallel by
	// one command) and the wasip1 guest.
	host := exec.Command("go", "build", "-ldflags", "-X github.com/tetratelabs/wazero/internal/version.version="+wv,
		"-o", dir+string(filepath.Separator), "../../cmd/flotilla-runtime-onnx", "./internal/crashtest", "./internal/wasmwarm")
	guest := exec.Command("go", "build", "-buildmode=c-shared", "-o", misbehaveBin, "../../runtime/wasm/testdata/guests/misbehave")
	guest.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	errs := make(chan error, 2)
	for _, c := range []*exec.Cmd{host, guest} {
		go func() {
			if out, err := c.CombinedOutput(); err != nil {
				errs <- fmt.Errorf("%v: %v\n%s", c.Args, err, out)
				return
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	err = os.MkdirAll(pluginDir, 0o755)
	if err == nil {
		err = os.Rename(filepath.Join(dir, "flotilla-runtime-onnx"), filepath.Join(pluginDir, "flotilla-runtime-onnx"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	// Compile the guest into the shared compilation cache outside this
	// (possibly -race) binary: the tests then load it from the cache.
	if out, err := exec.Command(warm, "-cache", wasmCache, misbehaveBin).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "warming the wasm cache: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// wazeroCacheVersion is the version this binary's wazero names its
// compilation cache folder after (wazero-<version>-<arch>-<os>).
func wazeroCacheVersion(cache string) (string, error) {
	rt, err := wasm.New(wasm.Config{CacheDir: cache})
	if err != nil {
		return "", err
	}
	rt.Close()
	ents, err := os.ReadDir(cache)
	if err != nil {
		return "", err
	}
	suffix := "-" + goruntime.GOARCH + "-" + goruntime.GOOS
	for _, e := range ents {
		if v, ok := strings.CutPrefix(e.Name(), "wazero-"); ok && strings.HasSuffix(v, suffix) {
			return strings.TrimSuffix(v, suffix), nil
		}
	}
	return "", fmt.Errorf("no wazero cache folder in %s", cache)
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

// onnxPlugin starts the real ONNX Runtime plugin process.
func onnxPlugin(t testing.TB) *native.Plugin {
	t.Helper()
	p, err := native.Start(context.Background(), filepath.Join(pluginDir, "flotilla-runtime-onnx"), native.Config{
		Env:          []string{"FLOTILLA_ORT_LIB=" + ortLib(t)},
		Logger:       hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}),
		PollInterval: 20 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func wasmRuntime(t testing.TB) *wasm.Runtime {
	t.Helper()
	rt, err := wasm.New(wasm.Config{CacheDir: wasmCache})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// chunks is an in-memory chunk store, the source agent/unpack reads.
type chunks map[[32]byte][]byte

func (c chunks) PutChunk(sum [32]byte, data []byte) error {
	c[sum] = append([]byte(nil), data...)
	return nil
}

func (c chunks) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	b, ok := c[sum]
	if !ok {
		return nil, fmt.Errorf("chunk %x missing", sum[:4])
	}
	return b, nil
}

// buildBundle copies the bundle folder src, applies edits to its
// bundle.toml (old → new pairs), adds extra files, and builds it with
// controlplane/bundle, as the release pipeline does.
func buildBundle(t testing.TB, cs chunks, src string, extra map[string]string, edits ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
		t.Fatal(err)
	}
	for name, from := range extra {
		b, err := os.ReadFile(from)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := filepath.Join(dir, "bundle.toml")
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(edits); i += 2 {
		if !strings.Contains(s, edits[i]) {
			t.Fatalf("bundle.toml has no %q", edits[i])
		}
		s = strings.Replace(s, edits[i], edits[i+1], 1)
	}
	if err := os.WriteFile(cfg, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	raw, _, err := bundle.Build(dir, bundle.Options{Chunks: cs})
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// digitsRelease builds the digits bundle as release n.
func digitsRelease(t testing.TB, cs chunks, n int, edits ...string) []byte {
	t.Helper()
	edits = append([]string{"release = 1\n", fmt.Sprintf("release = %d\n", n), `version = "1.0.0"`, fmt.Sprintf(`version = "1.%d.0"`, n)}, edits...)
	return buildBundle(t, cs, "testdata/digits", nil, edits...)
}

func misbehaveRelease(t testing.TB, cs chunks, n int, edits ...string) []byte {
	t.Helper()
	edits = append([]string{"release = 1\n", fmt.Sprintf("release = %d\n", n)}, edits...)
	return buildBundle(t, cs, "testdata/misbehave", map[string]string{"model.wasm": misbehaveBin}, edits...)
}

// install does what the agent does with a verified bundle: prepare the
// inactive slot, unpack into it, stage.
func install(ctx context.Context, l *Lifecycle, cs chunks, raw []byte) error {
	m, _, err := decodeManifest(raw)
	if err != nil {
		return err
	}
	var size uint64
	for _, f := range m.GetFiles() {
		size += f.GetSize()
	}
	dir, err := l.PrepareSlot(ctx, m.GetName(), size)
	if err != nil {
		return err
	}
	if err := unpack.Unpack(ctx, cs, m, dir, unpack.Limits{}); err != nil {
		return err
	}
	return l.Stage(ctx, raw)
}

func digestOf(raw []byte) string {
	sum := sha256.Sum256(raw)
	return fmt.Sprintf("%x", sum)
}

// fixture is a lifecycle on a real SQLite state database.
type fixture struct {
	t   *testing.T
	dir string
	db  *state.DB
	cfg Config
	l   *Lifecycle
}

func newFixture(t *testing.T, rts RuntimeList, tweak func(*Config)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir()}
	f.cfg = Config{Dir: filepath.Join(f.dir, "models"), Runtimes: rts, CheckInterval: 20 * time.Millisecond}
	if tweak != nil {
		tweak(&f.cfg)
	}
	f.open()
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	db, err := state.Open(context.Background(), filepath.Join(f.dir, "state"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.db = db
	f.cfg.Store = db
	l, err := Open(context.Background(), f.cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.l = l
	f.t.Cleanup(f.close)
}

func (f *fixture) close() {
	if f.l != nil {
		f.l.Close()
		f.l = nil
	}
	if f.db != nil {
		f.db.Close()
		f.db = nil
	}
}

// reopen simulates an agent restart on the same data.
func (f *fixture) reopen() {
	f.t.Helper()
	f.close()
	f.open()
}

// waitPhase waits for model name to reach a phase, failing after 20 s.
func (f *fixture) waitState(name string, ok func(State) bool) State {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s, _ := f.l.State(name)
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("model %s stuck in %+v", name, s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// digitsRows are test rows with the reference outputs.
type digitsRows struct {
	Pixels        [][]float64 `json:"pixels"`
	Probabilities [][]float64 `json:"probabilities"`
}

func loadRows(t testing.TB) digitsRows {
	t.Helper()
	b, err := os.ReadFile("testdata/digits/rows.json")
	if err != nil {
		t.Fatal(err)
	}
	var r digitsRows
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func f32Tensor(name string, rows [][]float64) runtime.Tensor {
	var b []byte
	for _, r := range rows {
		for _, v := range r {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)))
		}
	}
	return runtime.Tensor{Name: name, DType: runtime.Float32, Shape: []int64{int64(len(rows)), int64(len(rows[0]))}, Data: b}
}

// checkDigits runs the test rows through model name and compares with the
// reference outputs.
func checkDigits(t testing.TB, l *Lifecycle) Result {
	t.Helper()
	rows := loadRows(t)
	res, err := l.Infer(context.Background(), "digits", []runtime.Tensor{f32Tensor("pixels", rows.Pixels)})
	if err != nil {
		t.Fatalf("infer: %v", err)
	}
	if err := compareAll(res.Outputs, []runtime.Tensor{f32Tensor("probabilities", rows.Probabilities)}, Tolerance{Abs: 1e-4}); err != nil {
		t.Fatalf("digits outputs: %v", err)
	}
	return res
}

func modeTensor(mode int32) runtime.Tensor {
	return runtime.Tensor{Name: "mode", DType: runtime.Int32, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint32(nil, uint32(mode))}
}
