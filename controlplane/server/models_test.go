package server_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"expvar"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// buildDir holds binaries the tests build on first need (the ONNX
// runtime plugin); TestMain removes it.
var buildDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "server-test-")
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

// onnxPluginDir builds the real flotilla-runtime-onnx once and returns its
// folder.
func onnxPluginDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(buildDir, "plugins")
	pluginOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "flotilla-runtime-onnx"), "../../cmd/flotilla-runtime-onnx").CombinedOutput()
		if err != nil {
			pluginErr = fmt.Errorf("build plugin: %v\n%s", err, out)
		}
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	return dir
}

// ortLib is $FLOTILLA_ORT_LIB or the library `make deps` caches; missing,
// it fails the test under CI and skips it elsewhere.
func ortLib(t *testing.T) string {
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

// modelAgent is a real agent running its models: the lifecycle, the ONNX
// plugin, the local inference API on loopback and a unix socket.
type modelAgent struct {
	*fleetAgent
	metrics *expvar.Map
}

func startModelAgent(t *testing.T, o operator, id, dataDir, token string) *modelAgent {
	t.Helper()
	metrics := new(expvar.Map).Init()
	a, err := agent.New(agent.Config{DataDir: dataDir, DeviceID: id, ServerURL: o.srv.APIURL(), EnrolToken: token,
		CAFingerprint: o.srv.CAFingerprint(), MQTTURL: o.srv.MQTTURL(), HeartbeatInterval: time.Second, Version: "models-test",
		Logger: testLogger(t), Metrics: metrics,
		Models: &agent.ModelsConfig{PluginDir: onnxPluginDir(t), ORTLib: ortLib(t), InferAddr: "127.0.0.1:0",
			InferSocket: filepath.Join(dataDir, agent.InferSocketName),
			Lifecycle:   lifecycle.Config{CheckInterval: 50 * time.Millisecond}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent run: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	eventually(t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
	return &modelAgent{fleetAgent: &fleetAgent{a: a, dataDir: dataDir, stop: stop}, metrics: metrics}
}

// digitsRows reads the test rows and their reference outputs (the first
// rows of shared/models/digits/test.csv and test_expected.csv).
func digitsRows(t *testing.T) (pixels, want [][]float64) {
	t.Helper()
	read := func(name string, header bool) [][]float64 {
		f, err := os.Open(filepath.Join("testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		recs, err := csv.NewReader(f).ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if header {
			recs = recs[1:]
		}
		var out [][]float64
		for _, r := range recs {
			var row []float64
			for _, c := range r {
				v, err := strconv.ParseFloat(c, 64)
				if err != nil {
					t.Fatal(err)
				}
				row = append(row, v)
			}
			out = append(out, row)
		}
		return out
	}
	pixels = read("digits-test.csv", true)
	for i := range pixels {
		pixels[i] = pixels[i][:64] // the label is the last column
	}
	return pixels, read("digits-test_expected.csv", false)
}

// inferResponse is the KServe v2 answer.
type inferResponse struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	Outputs      []struct {
		Name     string    `json:"name"`
		Datatype string    `json:"datatype"`
		Shape    []int64   `json:"shape"`
		Data     []float64 `json:"data"`
	} `json:"outputs"`
}

// inferDigits posts the test rows to the agent's local API with client
// and checks the outputs against the reference; it returns the version
// that answered.
func inferDigits(t *testing.T, client *http.Client, base string) string {
	t.Helper()
	pixels, want := digitsRows(t)
	var flat []float64
	for _, r := range pixels {
		flat = append(flat, r...)
	}
	body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{
		"name": "pixels", "datatype": "FP32", "shape": []int{len(pixels), 64}, "data": flat}}})
	resp, err := client.Post(base+"/v2/models/digits/infer", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("infer: %d %s", resp.StatusCode, b)
	}
	var r inferResponse
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	if r.ModelName != "digits" || len(r.Outputs) != 1 || r.Outputs[0].Name != "probabilities" || r.Outputs[0].Datatype != "FP32" ||
		len(r.Outputs[0].Shape) != 2 || r.Outputs[0].Shape[0] != int64(len(pixels)) || r.Outputs[0].Shape[1] != 10 {
		t.Fatalf("infer answer: %s", b)
	}
	for i, row := range want {
		for j, w := range row {
			if got := r.Outputs[0].Data[i*10+j]; math.Abs(got-w) > 1e-5 {
				t.Fatalf("row %d class %d: %g, reference %g", i, j, got, w)
			}
		}
	}
	return r.ModelVersion
}

func reportedDigits(srv *server.Server, id string) *pb.ModelState {
	for _, m := range srv.ReportedModels(id) {
		if m.GetName() == "digits" {
			return m
		}
	}
	return nil
}

// progressOf is the control plane's view of the device's fetch of digest.
func progressOf(t *testing.T, o operator, id, digest string) (api.ProgressView, bool) {
	t.Helper()
	ps, err := adminClient(t, o.srv, o.dir).Progress(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if p.Digest == digest {
			return p, true
		}
	}
	return api.ProgressView{}, false
}

// TestModelEndToEnd runs the whole path with real parts only: operator
// keys, release and bundle pushed with flotctl, the digits bundle
// assigned; a real agent (embedded broker, real ONNX plugin) stages,
// golden-checks and activates it; the local KServe API answers the
// reference outputs over TCP and the unix socket; the reported state names
// release 1. Release 2 fails its golden check: it is never switched in,
// the report says why, and it is not fetched again — not by the running
// agent, nor after a restart while the retained desired state still
// names it.
func TestModelEndToEnd(t *testing.T) {
	ortLib(t) // skip early when ONNX Runtime is missing (outside CI)
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)

	_, d1 := op.release(digitsSource(t, "1", nil), "1")
	et, err := adminClient(t, srv, dir).CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "models", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "dev-m")
	dev := startModelAgent(t, op, "dev-m", dataDir, et.Token)
	op.run("devices", "assign", "dev-m", "digits", "1")
	eventually(t, "release 1 active", func() bool {
		m := reportedDigits(srv, "dev-m")
		return m != nil && m.GetActiveRelease() == 1 && m.GetActiveSlot() == "a" &&
			(m.GetHealth() == pb.ModelState_HEALTH_PROBATION || m.GetHealth() == pb.ModelState_HEALTH_HEALTHY)
	})
	if m := reportedDigits(srv, "dev-m"); m.GetStagedRelease() != 1 || m.GetStagedDigest() != d1 || m.GetLastError() != "" || m.GetActiveVersion() != "1.0.0" {
		t.Fatalf("reported %v", m)
	}
	base := "http://" + dev.a.InferAddr()
	if v := inferDigits(t, http.DefaultClient, base); v != "1" {
		t.Fatalf("answered by version %q", v)
	}
	unix := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dataDir, agent.InferSocketName))
	}}}
	if v := inferDigits(t, unix, "http://agent"); v != "1" {
		t.Fatalf("answered by version %q over the socket", v)
	}

	// Release 2 expects other outputs from the same golden inputs.
	src2 := digitsSource(t, "2", func(d string) {
		bad := strings.Repeat("[1,0,0,0,0,0,0,0,0,0],", 3) + "[1,0,0,0,0,0,0,0,0,0]"
		if err := os.WriteFile(filepath.Join(d, "golden", "probabilities.json"), []byte("["+bad+"]"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	_, d2 := op.release(src2, "2")
	op.run("devices", "assign", "dev-m", "digits", "2")
	eventually(t, "release 2 refused", func() bool {
		m := reportedDigits(srv, "dev-m")
		return m != nil && m.GetStagedRelease() == 2 && strings.Contains(m.GetLastError(), "golden check")
	})
	m := reportedDigits(srv, "dev-m")
	if m.GetActiveRelease() != 1 || m.GetStagedDigest() != d2 || !strings.Contains(m.GetLastError(), "release 2 rejected") ||
		!strings.Contains(m.GetLastError(), `output "probabilities"`) || m.GetHealth() != pb.ModelState_HEALTH_HEALTHY {
		t.Fatalf("reported after the refusal: %v", m)
	}
	if v := inferDigits(t, http.DefaultClient, base); v != "1" {
		t.Fatalf("answered by version %q after the refusal", v)
	}
	p2, ok := progressOf(t, op, "dev-m", d2)
	if !ok || p2.State != "staged" {
		t.Fatalf("progress of release 2: %+v", p2)
	}
	chunks := dev.chunks(t)

	// The retained desired state still names release 2. A resync makes the
	// agent go through it again, and so does a restart: neither fetches it.
	op.run("devices", "resync", "dev-m")
	dev.stop()
	dev = startModelAgent(t, op, "dev-m", dataDir, "")
	eventually(t, "desired state and release metadata seen after the restart", func() bool {
		return dev.metrics.Get(agent.CounterReleaseUpdates) != nil && dev.metrics.Get(agent.CounterReleaseUpdates).String() != "0"
	})
	base = "http://" + dev.a.InferAddr()
	if v := inferDigits(t, http.DefaultClient, base); v != "1" {
		t.Fatalf("answered by version %q after a restart", v)
	}
	time.Sleep(2 * time.Second) // the staging worker has had the metadata for a while
	if got, _ := progressOf(t, op, "dev-m", d2); got.At != p2.At || got.State != "staged" {
		t.Fatalf("release 2 fetched again: progress %+v, was %+v", got, p2)
	}
	if n := dev.chunksAddedSince(t, chunks); n != 0 {
		t.Fatalf("%d chunks fetched again", n)
	}
	m = reportedDigits(srv, "dev-m")
	if m.GetActiveRelease() != 1 || !strings.Contains(m.GetLastError(), "golden check") {
		t.Fatalf("reported after the restart: %v", m)
	}
}
