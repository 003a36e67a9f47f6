package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// operator runs flotctl as an operator would, against srv.
type operator struct {
	t     *testing.T
	srv   *server.Server
	token string
	keys  string // flotctl keys generate -dir
	dir   string // the server's data folder
}

func (o operator) run(args ...string) string {
	o.t.Helper()
	var out, errb bytes.Buffer
	env := flotctl.Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string {
		switch k {
		case "FLOTILLA_SERVER":
			return o.srv.APIURL()
		case "FLOTILLA_TOKEN":
			return o.token
		case "FLOTILLA_CA_FINGERPRINT":
			return o.srv.CAFingerprint()
		}
		return ""
	}}
	if code := flotctl.Run(context.Background(), args, env); code != 0 {
		o.t.Fatalf("flotctl %s: exit %d: %s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// operatorKeys makes the release keys with flotctl and puts the online key
// where the server looks for it.
func operatorKeys(t *testing.T, serverDir string) string {
	keys := filepath.Join(t.TempDir(), "keys")
	var out bytes.Buffer
	if code := flotctl.Run(context.Background(), []string{"keys", "generate", "-dir", keys, "-threshold", "2", "-count", "3"},
		flotctl.Env{Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}); code != 0 {
		t.Fatalf("keys generate: %s", out.String())
	}
	online, _ := filepath.Glob(filepath.Join(keys, "online", "online-*.pem"))
	if len(online) != 1 {
		t.Fatalf("online keys: %v", online)
	}
	b, err := os.ReadFile(online[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(serverDir, "release"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(serverDir, "release", filepath.Base(online[0])), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return keys
}

// digitsSource copies testdata/digits for release counter rel; change, if
// set, edits it.
func digitsSource(t *testing.T, rel string, change func(dir string)) string {
	dir := filepath.Join(t.TempDir(), "digits")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("testdata", "digits"))); err != nil {
		t.Fatal(err)
	}
	toml := filepath.Join(dir, "bundle.toml")
	b, _ := os.ReadFile(toml)
	b = bytes.Replace(b, []byte("release = 1\n"), []byte("release = "+rel+"\n"), 1)
	if err := os.WriteFile(toml, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if change != nil {
		change(dir)
	}
	return dir
}

// release builds src, releases it offline, pushes the release and the
// bundle; it returns the bundle store and the manifest's digest.
func (o operator) release(src, counter string) (*bundle.Store, string) {
	o.t.Helper()
	storeDir := src + ".bundle"
	o.run("bundle", "build", src, "-o", storeDir, "-chunk-size", "4096")
	s, err := bundle.OpenStore(storeDir)
	if err != nil {
		o.t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(storeDir, "manifests", "*"))
	if len(names) != 1 {
		o.t.Fatalf("manifests: %v", names)
	}
	o.run("release", "add", "-keys", o.keys, "-model", "digits", "-counter", counter, "-version", "1."+counter, names[0])
	o.run("release", "push", "-keys", o.keys)
	o.run("bundle", "push", "-store", storeDir)
	return s, filepath.Base(names[0])
}

type fleetAgent struct {
	a       *agent.Agent
	dataDir string
	stop    func()
}

func startAgent(t *testing.T, o operator, id string) *fleetAgent {
	t.Helper()
	c := adminClient(t, o.srv, o.dir)
	tok, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "bundles", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), id)
	a, err := agent.New(agent.Config{DataDir: dir, DeviceID: id, ServerURL: o.srv.APIURL(), EnrolToken: tok.Token,
		CAFingerprint: o.srv.CAFingerprint(), MQTTURL: o.srv.MQTTURL(), HeartbeatInterval: time.Second, Version: "bundles-test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	eventually(t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
	return &fleetAgent{a: a, dataDir: dir, stop: stop}
}

func (f *fleetAgent) staged(t *testing.T) map[string]install.Staged {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dataDir, "bundles", "staged.json"))
	if err != nil {
		return nil
	}
	var m map[string]install.Staged
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// chunks is the set of chunks in the agent's store. The store collects
// chunks no slot needs, so fetches are counted as chunks not there before
// (chunksAddedSince), never as a difference of counts.
func (f *fleetAgent) chunks(t *testing.T) map[string]bool {
	set := map[string]bool{}
	filepath.WalkDir(filepath.Join(f.dataDir, "bundles", "chunks"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && len(d.Name()) == 64 {
			set[d.Name()] = true
		}
		return nil
	})
	return set
}

// chunksAddedSince counts the chunks in the store now that were not in before.
func (f *fleetAgent) chunksAddedSince(t *testing.T, before map[string]bool) int {
	n := 0
	for c := range f.chunks(t) {
		if !before[c] {
			n++
		}
	}
	return n
}

// sameFiles checks that every file of the manifest in slot equals src's.
func sameFiles(t *testing.T, s *bundle.Store, digest, src, slot string) {
	t.Helper()
	_, m, err := s.Manifest(digest)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.GetFiles() {
		want, err := os.ReadFile(filepath.Join(src, f.GetPath()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(slot, f.GetPath()))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("staged %s differs from the source (%v)", f.GetPath(), err)
		}
	}
}

func newChunks(t *testing.T, s1 *bundle.Store, d1 string, s2 *bundle.Store, d2 string) int {
	_, m1, _ := s1.Manifest(d1)
	_, m2, _ := s2.Manifest(d2)
	old := map[string]bool{}
	for _, f := range m1.GetFiles() {
		for _, c := range f.GetChunks() {
			old[string(c.GetSha256())] = true
		}
	}
	n := 0
	for _, f := range m2.GetFiles() {
		for _, c := range f.GetChunks() {
			if !old[string(c.GetSha256())] {
				old[string(c.GetSha256())] = true
				n++
			}
		}
	}
	return n
}

// TestBundleEndToEnd: operator keys from flotctl, a release pushed, the
// digits bundle uploaded and assigned; a real agent on the embedded broker
// stages it; a second release changing one file fetches only that file's
// chunks; a director assignment nobody released is refused with the
// staged state untouched.
func TestBundleEndToEnd(t *testing.T) {
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

	// A release before the device enrols, so enrolment carries its root.
	src1 := digitsSource(t, "1", nil)
	s1, d1 := op.release(src1, "1")
	dev := startAgent(t, op, "dev-1")
	op.run("devices", "assign", "dev-1", "digits", "1")
	eventually(t, "release 1 staged", func() bool { return dev.staged(t)["digits"].Release == 1 })
	st := dev.staged(t)["digits"]
	if st.Digest != d1 {
		t.Fatalf("staged digest %s, want %s", st.Digest, d1)
	}
	sameFiles(t, s1, d1, src1, st.Dir)
	eventually(t, "progress staged", func() bool {
		return strings.Contains(op.run("devices", "progress", "dev-1"), "staged")
	})
	if out := op.run("devices", "progress", "dev-1"); !strings.Contains(out, "[##############################] 100%") {
		t.Errorf("progress bar: %q", out)
	}
	eventually(t, "reported staged release 1", func() bool {
		ms := srv.ReportedModels("dev-1")
		return len(ms) == 1 && ms[0].GetStagedRelease() == 1 && ms[0].GetStagedDigest() == d1
	})

	// Release 2 changes labels.txt only.
	before := dev.chunks(t)
	wave0, repair0 := srv.ChunksSent()
	src2 := digitsSource(t, "2", func(d string) {
		if err := os.WriteFile(filepath.Join(d, "labels.txt"), []byte("zero one two three four five six seven eight nine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	s2, d2 := op.release(src2, "2")
	want := newChunks(t, s1, d1, s2, d2)
	if want < 1 {
		t.Fatalf("release 2 shares every chunk with release 1")
	}
	op.run("devices", "assign", "dev-1", "digits", "2")
	eventually(t, "release 2 staged", func() bool { return dev.staged(t)["digits"].Release == 2 })
	sameFiles(t, s2, d2, src2, dev.staged(t)["digits"].Dir)
	if got := dev.chunksAddedSince(t, before); got != want {
		t.Errorf("release 2 stored %d new chunks, want %d (labels.txt only)", got, want)
	}
	// The delta wave carries the new chunks only; a device that subscribed
	// after it passed gets them (and nothing else) by repair.
	wave1, repair1 := srv.ChunksSent()
	if wave1-wave0 != uint64(want) || repair1-repair0 > uint64(want) {
		t.Errorf("control plane sent %d wave and %d repair chunks for release 2, want %d and at most %d", wave1-wave0, repair1-repair0, want, want)
	}

	// A compromised director names a manifest nobody released.
	staged := dev.staged(t)["digits"]
	rogue, _, _ := s2.Manifest(d2)
	rogue = append(append([]byte(nil), rogue...), 0) // other bytes, same model
	rctx, rcancel := context.WithTimeout(context.Background(), wait)
	defer rcancel()
	if err := srv.RogueDirector(rctx, "dev-1", release.TargetPath("digits", 9), rogue); err != nil {
		t.Fatal(err)
	}
	eventually(t, "refusal reported", func() bool {
		ms := srv.ReportedModels("dev-1")
		return len(ms) == 1 && strings.Contains(ms[0].GetLastError(), "release repository does not") && ms[0].GetStagedRelease() == 2
	})
	if got := dev.staged(t)["digits"]; got != staged {
		t.Errorf("staged state changed after a refusal: %+v, was %+v", got, staged)
	}
	sameFiles(t, s2, d2, src2, staged.Dir)
}

// testLogger logs into the test's output (shown on failure or with -v).
// testLogger logs for t. With -v each line goes to t.Log as it comes;
// otherwise the lines of every logger of t are kept, in order, and shown
// only when t fails, after its failure messages, so a failure's own words
// come first in a long CI log.
func testLogger(t *testing.T) *slog.Logger {
	var w io.Writer = testWriter{t}
	if !testing.Verbose() {
		w = heldLogs(t)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// maxHeldLog bounds the log lines kept for one test; the oldest go first.
const maxHeldLog = 16 << 20

var held sync.Map // *testing.T → *heldLog

// heldLog keeps a test's log lines until its end.
type heldLog struct {
	mu      sync.Mutex
	lines   []string
	size    int
	dropped int
	done    bool
}

func heldLogs(t *testing.T) *heldLog {
	h, loaded := held.LoadOrStore(t, &heldLog{})
	l := h.(*heldLog)
	if !loaded {
		// Registered with t's first logger, so it runs after the
		// cleanups that stop what logs (they are registered later).
		t.Cleanup(func() {
			held.Delete(t)
			l.mu.Lock()
			defer l.mu.Unlock()
			l.done = true
			if !t.Failed() {
				return
			}
			if l.dropped > 0 {
				t.Logf("(%d earlier log lines dropped)", l.dropped)
			}
			t.Log("log:\n" + strings.Join(l.lines, "\n"))
		})
	}
	return l
}

func (l *heldLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done {
		return len(p), nil // a goroutine outliving its test
	}
	l.lines = append(l.lines, strings.TrimRight(string(p), "\n"))
	l.size += len(p)
	for l.size > maxHeldLog && len(l.lines) > 1 {
		l.size -= len(l.lines[0])
		l.lines = l.lines[1:]
		l.dropped++
	}
	return len(p), nil
}

// TestExpiredReleaseRefusedUntilFresh: the release timestamp expires
// before the device is assigned (the server's refresh is held back); the
// device refuses with ErrExpired's text and stages nothing, until the
// operator pushes again and fresh metadata arrives.
func TestExpiredReleaseRefusedUntilFresh(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	exp := release.DefaultExpiry
	exp.Timestamp = 2 * time.Second
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 300 * time.Millisecond, ReleaseExpiry: exp, ReleaseRefresh: time.Hour, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	src := digitsSource(t, "1", nil)
	s, d := op.release(src, "1")
	dev := startAgent(t, op, "dev-x")
	time.Sleep(3 * time.Second) // past the timestamp's expiry
	op.run("devices", "assign", "dev-x", "digits", "1")
	eventually(t, "expiry refusal reported", func() bool {
		ms := srv.ReportedModels("dev-x")
		return len(ms) == 1 && strings.Contains(ms[0].GetLastError(), "expired")
	})
	if got := dev.staged(t); len(got) != 0 {
		t.Fatalf("staged with expired metadata: %+v", got)
	}
	op.run("release", "push", "-keys", keys) // the server signs a fresh timestamp and publishes it
	eventually(t, "staged after fresh metadata", func() bool { return dev.staged(t)["digits"].Release == 1 })
	sameFiles(t, s, d, src, dev.staged(t)["digits"].Dir)
}

// newOperator is an operator of srv, whose data folder is dir, with the
// admin token the server made on first start and the release keys in
// keys ("" when the test releases nothing).
func newOperator(t *testing.T, srv *server.Server, dir, keys string) operator {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return operator{t: t, srv: srv, token: strings.TrimSpace(string(tok)), keys: keys, dir: dir}
}
