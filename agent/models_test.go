package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/reap"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// buildDir holds what the tests build on first need (the ONNX plugin).
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buildDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	pluginOnce sync.Once
	pluginErr  error
)

// onnxPluginBin builds the real flotilla-runtime-onnx once.
func onnxPluginBin(t testing.TB) string {
	t.Helper()
	// A machine without a Go toolchain (the GPU machine) runs a test binary
	// built elsewhere, with the plugin built beside it.
	if dir := os.Getenv("FLOTILLA_TEST_PLUGIN_DIR"); dir != "" {
		return filepath.Join(dir, "flotilla-runtime-onnx")
	}
	bin := filepath.Join(buildDir, "flotilla-runtime-onnx")
	pluginOnce.Do(func() {
		if out, err := exec.Command("go", "build", "-o", bin, "../cmd/flotilla-runtime-onnx").CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("build plugin: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return bin
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

func copyFile(t testing.TB, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// TestReconfigureLive: heartbeat interval and labels change on a running
// agent; the labels are announced in a new birth.
func TestReconfigureLive(t *testing.T) {
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg := testConfig(t, srv, "dev-rc")
	cfg.Clock = clock
	cfg.HeartbeatInterval = 10 * time.Second
	r := start(t, cfg)
	eventually(t, "connected", func() bool { return r.Status().State == StateConnected })
	eventually(t, "heartbeat timer", func() bool { return clock.Waiters() > 0 })
	w0 := clock.Waiters()
	beats := func() int64 { return r.Status().Counters[CounterHeartbeats] }

	mark := srv.Mark()
	r.Reconfigure(Live{HeartbeatInterval: 40 * time.Second, Labels: map[string]string{"site": "plant-9", "line": "2"}})
	b := agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-rc", topic.Birth, nil)
	if b.GetLabels()["site"] != "plant-9" || b.GetLabels()["line"] != "2" || len(b.GetLabels()) != 2 {
		t.Fatalf("birth labels %v", b.GetLabels())
	}
	eventually(t, "a 40 s timer beside the abandoned 10 s one", func() bool { return clock.Waiters() == w0+1 })
	clock.Advance(39 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := beats(); n != 0 {
		t.Fatalf("%d heartbeats within 39 s of a 40 s interval", n)
	}
	clock.Advance(time.Second)
	eventually(t, "heartbeat at 40 s", func() bool { return beats() == 1 })

	// The same labels again: no new birth.
	mark = srv.Mark()
	r.Reconfigure(Live{HeartbeatInterval: 40 * time.Second, Labels: map[string]string{"site": "plant-9", "line": "2"}})
	time.Sleep(200 * time.Millisecond)
	for _, m := range srv.Messages()[mark:] {
		if strings.HasSuffix(m.Topic, "/birth") {
			t.Fatalf("birth published for unchanged labels")
		}
	}
}

// TestModelsWithoutPlugins: an agent with models on but no plugin (and no
// model) starts, connects, serves the API, and starts no process.
func TestModelsWithoutPlugins(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-np")
	cfg.Models = &ModelsConfig{PluginDir: filepath.Join(t.TempDir(), "missing"), InferAddr: "127.0.0.1:0",
		InferSocket: filepath.Join(cfg.DataDir, InferSocketName)}
	r := start(t, cfg)
	eventually(t, "connected", func() bool { return r.Status().State == StateConnected })
	resp, err := http.Get("http://" + r.InferAddr() + "/v2/health/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ready: %d", resp.StatusCode)
	}
	if pids, _ := reap.Find(reap.Marker(cfg.DataDir)); len(pids) != 0 {
		t.Fatalf("plugin processes %v started with no model", pids)
	}
	if _, err := New(Config{DataDir: t.TempDir(), Models: &ModelsConfig{InferAddr: "0.0.0.0:8580"}}); err == nil {
		t.Fatal("a non-loopback inference address was accepted")
	}
}

// sideloadFixture is a release repository (offline keys, as the operators
// hold them) and the digits bundle released in it.
type sideloadFixture struct {
	t      *testing.T
	repo   *release.Repository
	tgt    []*release.Key
	online *release.Key
	src    string
}

func newSideloadFixture(t *testing.T) *sideloadFixture {
	gen := func(role string, n int) []*release.Key {
		var ks []*release.Key
		for range n {
			k, err := release.GenerateKey(role)
			if err != nil {
				t.Fatal(err)
			}
			ks = append(ks, k)
		}
		return ks
	}
	f := &sideloadFixture{t: t, tgt: gen(release.RoleTargets, 3), online: gen(release.RoleOnline, 1)[0], src: filepath.Join(t.TempDir(), "digits")}
	var err error
	if f.repo, err = release.Init(release.RootKeys{Root: gen(release.RoleRoot, 3), Targets: f.tgt, Online: f.online, Threshold: 2}, time.Now(), release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(f.src, os.DirFS(filepath.Join("..", "controlplane", "bundle", "testdata", "digits"))); err != nil {
		t.Fatal(err)
	}
	return f
}

// drop writes a sideload folder for release counter of the digits bundle
// into dir/name (through a hidden name and a rename, as documented);
// tamper, if set, edits the files folder before the rename.
func (f *sideloadFixture) drop(dir, name string, counter uint64, tamper func(files string)) {
	t := f.t
	t.Helper()
	toml := filepath.Join(f.src, "bundle.toml")
	b, _ := os.ReadFile(toml)
	b = []byte(strings.Replace(string(b), "release = 1\n", fmt.Sprintf("release = %d\n", counter), 1))
	src := filepath.Join(t.TempDir(), "digits")
	if err := os.CopyFS(src, os.DirFS(f.src)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "bundle.toml"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	raw, _, err := bundle.Build(src, bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	path := release.TargetPath("digits", counter)
	now := time.Now()
	if _, err := f.repo.AddTarget(path, raw, release.ReleaseCustom{Model: "digits", ReleaseCounter: counter, Version: fmt.Sprintf("1.%d", counter)}, f.tgt[:2], now, release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	if _, err := f.repo.Publish(f.online, now, release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "."+name)
	for file, body := range f.repo.Metadata() {
		if err := os.MkdirAll(filepath.Join(tmp, "release"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, "release", file), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "manifest"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "target"), []byte(path+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"model.onnx", "labels.txt"} {
		copyFile(t, filepath.Join(src, n), filepath.Join(tmp, "files", n), 0o644)
	}
	if tamper != nil {
		tamper(filepath.Join(tmp, "files"))
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// result waits for the dropped folder name to be moved aside and returns
// the outcome folder and the RESULT text.
func result(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	var outcome, text string
	eventually(t, "sideload of "+name+" handled", func() bool {
		for _, o := range []string{sideloadDone, sideloadFailed} {
			if b, err := os.ReadFile(filepath.Join(dir, o, name, sideloadResult)); err == nil {
				outcome, text = o, string(b)
				return true
			}
		}
		return false
	})
	return outcome, text
}

// digitsAnswer posts the golden inputs to the local API and returns the
// answering version, or the HTTP status when it is not 200.
func digitsAnswer(t *testing.T, addr, src string) (string, int) {
	t.Helper()
	var pixels, want [][]float64
	for name, dst := range map[string]*[][]float64{"pixels.json": &pixels, "probabilities.json": &want} {
		b, err := os.ReadFile(filepath.Join(src, "golden", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	var flat []float64
	for _, r := range pixels {
		flat = append(flat, r...)
	}
	body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "pixels", "datatype": "FP32", "shape": []int{len(pixels), 64}, "data": flat}}})
	resp, err := http.Post("http://"+addr+"/v2/models/digits/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode
	}
	var r struct {
		ModelVersion string `json:"model_version"`
		Outputs      []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &r); err != nil || len(r.Outputs) != 1 {
		t.Fatalf("answer %s: %v", b, err)
	}
	for i, row := range want {
		for j, w := range row {
			if got := r.Outputs[0].Data[i*10+j]; math.Abs(got-w) > 1e-4 {
				t.Fatalf("row %d class %d: %g, want %g", i, j, got, w)
			}
		}
	}
	return r.ModelVersion, http.StatusOK
}

// journalHas reports whether the agent's journal holds code with text.
func journalHas(t *testing.T, dataDir, code, text string) bool {
	t.Helper()
	db, err := state.Open(context.Background(), dataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ev, err := db.Recent(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ev {
		if e.Code == code && strings.Contains(e.Message, text) {
			return true
		}
	}
	return false
}

// TestSideloadAndPluginFolder drops real bundle folders into the sideload
// folder of a real agent (real ONNX plugin): without director metadata it
// is refused until the local authorisation is given; then it is verified,
// activated and served, the waiver journaled and reported; a tampered
// file is refused with the active release untouched. Then the plugin
// folder: started without the plugin, the active model cannot load; the
// plugin dropped into the watched folder brings it back.
func TestSideloadAndPluginFolder(t *testing.T) {
	t.Parallel()
	lib := ortLib(t)
	bin := onnxPluginBin(t)
	srv := agenttest.New(t)
	f := newSideloadFixture(t)
	cfg := testConfig(t, srv, "dev-sl")
	plugins, side := filepath.Join(t.TempDir(), "plugins"), filepath.Join(t.TempDir(), "sideload")
	copyFile(t, bin, filepath.Join(plugins, "flotilla-runtime-onnx"), 0o755)
	dk, err := release.GenerateKey(release.RoleOnline)
	if err != nil {
		t.Fatal(err)
	}
	director, err := release.NewDirector(dk, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := install.Provision(stagingDir(cfg.DataDir), f.repo.Roots[0], director.Root()); err != nil {
		t.Fatal(err)
	}
	models := func(waive bool) *ModelsConfig {
		return &ModelsConfig{PluginDir: plugins, ORTLib: lib, InferAddr: "127.0.0.1:0", SideloadDir: side,
			SideloadWaiveDirector: waive, SideloadSettle: 100 * time.Millisecond}
	}

	// Without the local authorisation: refused, nothing installed.
	cfg.Models = models(false)
	r := start(t, cfg)
	eventually(t, "connected", func() bool { return r.Status().State == StateConnected })
	f.drop(side, "digits-1", 1, nil)
	if o, text := result(t, side, "digits-1"); o != sideloadFailed || !strings.Contains(text, "director metadata required") {
		t.Fatalf("without authorisation: %s %q", o, text)
	}
	if _, st := digitsAnswer(t, r.InferAddr(), f.src); st != http.StatusNotFound {
		t.Fatalf("digits served after a refused sideload: %d", st)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	// With it: verified, activated, served; the waiver journaled and reported.
	cfg.Models = models(true)
	r = start(t, cfg)
	mark := srv.Mark()
	eventually(t, "connected", func() bool { return r.Status().State == StateConnected })
	f.drop(side, "digits-2", 2, nil)
	if o, text := result(t, side, "digits-2"); o != sideloadDone || !strings.Contains(text, "release 2") || !strings.Contains(text, "waived") {
		t.Fatalf("with authorisation: %s %q", o, text)
	}
	if v, st := digitsAnswer(t, r.InferAddr(), f.src); v != "2" {
		t.Fatalf("after the sideload: version %q, status %d", v, st)
	}
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-sl", topic.Reported, func(rs *flotillapb.ReportedState) bool {
		for _, m := range rs.GetModels() {
			if m.GetName() == "digits" && m.GetActiveRelease() == 2 && strings.Contains(m.GetLastError(), "waived by local authorisation") {
				return true
			}
		}
		return false
	})

	// A tampered file (same size) is refused by its hash; release 2 stays.
	f.drop(side, "digits-3", 3, func(files string) {
		p := filepath.Join(files, "labels.txt")
		b, _ := os.ReadFile(p)
		b[0] ^= 0x20
		os.WriteFile(p, b, 0o644)
	})
	if o, text := result(t, side, "digits-3"); o != sideloadFailed || !strings.Contains(text, "labels.txt") {
		t.Fatalf("tampered: %s %q", o, text)
	}
	if v, _ := digitsAnswer(t, r.InferAddr(), f.src); v != "2" {
		t.Fatalf("after the tampered sideload: version %q", v)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if !journalHas(t, cfg.DataDir, "sideload.waived", "digits release 2") || !journalHas(t, cfg.DataDir, "sideload.failed", "digits-3") {
		t.Fatal("journal lacks the sideload entries")
	}

	// The plugin folder: without the plugin the active release cannot load.
	if err := os.Remove(filepath.Join(plugins, "flotilla-runtime-onnx")); err != nil {
		t.Fatal(err)
	}
	cfg.Models = models(true)
	mark = srv.Mark()
	r = start(t, cfg)
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-sl", topic.Reported, func(rs *flotillapb.ReportedState) bool {
		for _, m := range rs.GetModels() {
			if m.GetName() == "digits" && m.GetHealth() == flotillapb.ModelState_HEALTH_UNHEALTHY && strings.Contains(m.GetLastError(), "runtime onnx unavailable") {
				return true
			}
		}
		return false
	})
	if _, st := digitsAnswer(t, r.InferAddr(), f.src); st != http.StatusNotFound {
		t.Fatalf("served without its runtime: %d", st)
	}
	mark = srv.Mark()
	tmp := filepath.Join(plugins, ".incoming")
	copyFile(t, bin, tmp, 0o755)
	if err := os.Rename(tmp, filepath.Join(plugins, "flotilla-runtime-onnx")); err != nil {
		t.Fatal(err)
	}
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-sl", topic.Reported, func(rs *flotillapb.ReportedState) bool {
		for _, m := range rs.GetModels() {
			if m.GetName() == "digits" && m.GetHealth() == flotillapb.ModelState_HEALTH_HEALTHY && m.GetActiveRelease() == 2 {
				return true
			}
		}
		return false
	})
	if v, st := digitsAnswer(t, r.InferAddr(), f.src); v != "2" {
		t.Fatalf("after the plugin came: version %q, status %d", v, st)
	}
}
