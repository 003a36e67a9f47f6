package selfupdate_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/firmware/selfupdate"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"google.golang.org/protobuf/proto"
)

// build builds the real agent with version v (or the broken one) into dir.
func build(t *testing.T, dir, name, pkg, v string) string {
	t.Helper()
	out := filepath.Join(dir, name)
	args := []string{"build", "-o", out}
	if v != "" {
		args = append(args, "-ldflags", "-X main.version="+v)
	}
	c := exec.Command("go", append(args, pkg)...)
	c.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := c.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// agentRun is one start of the installed agent, as systemd would do it.
type agentRun struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's, once done
	log  *lockedBuffer
}

// lockedBuffer is the process's output, written by exec's copier while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func start(t *testing.T, bin, data string, srv *agenttest.Server) *agentRun {
	t.Helper()
	return startWith(t, bin, data, srv, "-sideload-dir", "off")
}

func startWith(t *testing.T, bin, data string, srv *agenttest.Server, extra ...string) *agentRun {
	t.Helper()
	log := new(lockedBuffer)
	args := []string{"run", "-data-dir", data, "-server", srv.URL(), "-ca-fingerprint", srv.CAFingerprint(),
		"-device-id", "dev-su", "-infer-addr", "off", "-infer-socket", "off", "-diag-socket", "off",
		"-plugin-dir", filepath.Join(data, "..", "no-plugins")}
	args = append(args, extra...) // a later flag wins: -diag-socket PATH over off
	c := exec.Command(bin, args...)
	c.Env = append(os.Environ(), "FLOTILLA_ENROL_TOKEN="+srv.Token(), selfupdate.SlotEnv+"=")
	c.Stdout, c.Stderr = log, log
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	r := &agentRun{cmd: c, done: make(chan struct{}), log: log}
	go func() { r.err = c.Wait(); close(r.done) }()
	t.Cleanup(func() {
		r.stop(t)
		if t.Failed() {
			t.Logf("agent %v:\n%s", args, log)
		}
	})
	return r
}

func (r *agentRun) stop(t *testing.T) {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		r.cmd.Process.Kill()
		t.Errorf("agent did not stop:\n%s", r.log)
	}
}

// exit waits for the run to end by itself and returns its exit status.
func (r *agentRun) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
		var ee *exec.ExitError
		if errors.As(r.err, &ee) {
			return ee.ExitCode()
		}
		return 0
	case <-time.After(20 * time.Second):
		t.Fatalf("agent did not exit:\n%s", r.log)
		return -1
	}
}

func birthVersion(t *testing.T, srv *agenttest.Server, mark int, want string) {
	t.Helper()
	agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-su", topic.Birth, func(b *flotillapb.Birth) bool { return b.GetAgentVersion() == want })
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSelfUpdateWithRealBuilds: two real agent builds of different
// versions and one broken on purpose. The installed 1.0 agent launches a
// staged 2.0, which connects and confirms itself; a broken build staged
// next crashes at each start until the launcher restores 2.0, which
// reconnects; the rejected version and why are kept.
func TestSelfUpdateWithRealBuilds(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent twice")
	}
	dir := t.TempDir()
	v1 := build(t, dir, "flotilla-agent", "../../cmd/flotilla-agent", "1.0.0-su")
	v2 := build(t, dir, "flotilla-agent-2", "../../cmd/flotilla-agent", "2.0.0-su")
	broken := build(t, dir, "brokenagent", "./internal/brokenagent", "")
	srv := agenttest.New(t)
	data := filepath.Join(dir, "data")
	up := selfupdate.New(data)

	// 1.0 alone: no slot, the installed binary runs.
	mark := srv.Mark()
	r := start(t, v1, data, srv)
	birthVersion(t, srv, mark, "1.0.0-su")
	r.stop(t)

	// 2.0 staged: launched by 1.0, confirmed once connected.
	f, _ := os.Open(v2)
	slot, err := up.Stage(f, 256<<20, "flotilla-agent", "2.0.0-su", time.Minute)
	f.Close()
	if err != nil || slot != "a" {
		t.Fatalf("stage 2.0: %q, %v", slot, err)
	}
	mark = srv.Mark()
	r = start(t, v1, data, srv)
	birthVersion(t, srv, mark, "2.0.0-su")
	eventually(t, "2.0 confirmed", func() bool { st, _ := up.State(); return !st.Pending && st.Active == "a" })
	r.stop(t)

	// A broken build staged: it crashes at every start; after three the
	// launcher restores 2.0.
	f, _ = os.Open(broken)
	if slot, err = up.Stage(f, 256<<20, "flotilla-agent", "3.0.0-broken", time.Hour); err != nil || slot != "b" {
		t.Fatalf("stage the broken build: %q, %v", slot, err)
	}
	if _, err := up.Stage(strings.NewReader("x"), 10, "flotilla-agent", "4", time.Hour); !errors.Is(err, selfupdate.ErrPending) {
		t.Errorf("a second stage while one is pending: %v", err)
	}
	for i := 1; i <= 3; i++ {
		r = start(t, v1, data, srv)
		if code := r.exit(t); code != 3 {
			t.Fatalf("start %d of the broken build exited %d:\n%s", i, code, r.log)
		}
	}
	mark = srv.Mark()
	r = start(t, v1, data, srv)
	birthVersion(t, srv, mark, "2.0.0-su")
	st, err := up.State()
	if err != nil || st.Pending || st.Active != "a" || st.RejectedVersion != "3.0.0-broken" || !strings.Contains(st.RejectedReason, "started 3 times") {
		t.Fatalf("after the rollback: %+v, %v", st, err)
	}
	if !strings.Contains(r.log.String(), "agent update rolled back") {
		t.Errorf("the rollback was not logged:\n%s", r.log)
	}
	// …and journaled and reported once, on the bundle's entry.
	defer func() {
		if t.Failed() {
			for _, m := range srv.Messages()[mark:] {
				if strings.HasSuffix(m.Topic, "/reported") {
					var rs flotillapb.ReportedState
					proto.Unmarshal(m.Payload, &rs)
					t.Logf("reported: %v", &rs)
				}
			}
			t.Logf("log:\n%s", r.log)
		}
	}()
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-su", topic.Reported, func(rs *flotillapb.ReportedState) bool {
		for _, m := range rs.GetModels() {
			if m.GetName() == "flotilla-agent" && strings.Contains(m.GetLastError(), "agent 3.0.0-broken rolled back to 2.0.0-su: started 3 times") {
				return true
			}
		}
		return false
	})
	if st, _ := up.State(); !st.Noted {
		t.Error("the rollback is not marked as told")
	}
	r.stop(t)
}

// TestDeadlineAndProbation: a pending binary not confirmed by its deadline
// is rolled back at the next start; Probation gives up at the deadline
// (the agent then exits) and confirms as soon as the agent is healthy.
func TestDeadlineAndProbation(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1_700_000_000, 0)
	up := &selfupdate.Updater{Dir: dir, Now: func() time.Time { return now }}
	if path, st, err := up.Select(); path != "" || st.Active != "" || err != nil {
		t.Fatalf("no slots: %q %+v %v", path, st, err)
	}
	if _, err := up.Stage(strings.NewReader("#!/bin/sh\n"), 1<<20, "flotilla-agent", "2", time.Minute); err != nil {
		t.Fatal(err)
	}
	path, st, err := up.Select()
	if err != nil || path != filepath.Join(dir, "a", selfupdate.BinaryName) || !st.Pending || st.Attempts != 1 {
		t.Fatalf("first start: %q %+v %v", path, st, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("binary mode %v", fi.Mode())
	}

	t.Setenv(selfupdate.SlotEnv, "a")
	ctx := context.Background()
	now = now.Add(2 * time.Minute)
	if _, err := up.Probation(ctx, func() bool { return false }, time.Millisecond); !errors.Is(err, selfupdate.ErrNotConfirmed) {
		t.Fatalf("probation past the deadline: %v", err)
	}
	path, st, err = up.Select()
	if err != nil || path != "" || st.Pending || st.RejectedVersion != "2" || !strings.Contains(st.RejectedReason, "deadline") {
		t.Fatalf("start after the deadline: %q %+v %v", path, st, err)
	}

	if _, err := up.Stage(strings.NewReader("#!/bin/sh\n"), 1<<20, "flotilla-agent", "3", time.Minute); err != nil {
		t.Fatal(err)
	}
	up.Select()
	calls := 0
	st, err = up.Probation(ctx, func() bool { calls++; return calls == 3 }, time.Millisecond)
	if err != nil || st.Pending || st.ActiveVersion != "3" || st.Previous != "" {
		t.Fatalf("probation confirmed: %+v %v", st, err)
	}
	// Confirmed binaries are not counted or rolled back.
	for range 5 {
		if _, st, _ = up.Select(); st.Pending || st.ActiveVersion != "3" {
			t.Fatalf("a confirmed binary was judged: %+v", st)
		}
	}
	// A pending binary that cannot be executed is rolled back at once.
	up.Stage(strings.NewReader("x"), 10, "flotilla-agent", "4", time.Minute)
	if st, err := up.Failed("exec: permission denied"); err != nil || st.ActiveVersion != "3" || st.RejectedVersion != "4" {
		t.Fatalf("failed exec: %+v %v", st, err)
	}
	// A corrupt state file is an error, not a guess.
	os.WriteFile(filepath.Join(dir, "state.json"), []byte(`{"active":"../x"}`), 0o600)
	if _, _, err := up.Select(); err == nil {
		t.Error("a state naming another folder was accepted")
	}
}

// TestAgentBundleSideloaded delivers a new agent the way the field does:
// a signed bundle of kind agent (release repository, real 2.0 binary)
// dropped in the sideload folder of a running 1.0 agent. 1.0 verifies and
// stages it, restarts through the launcher into 2.0, which connects and
// confirms; the retained bundle does not make 2.0 restart again.
func TestAgentBundleSideloaded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent twice")
	}
	dir := t.TempDir()
	v1 := build(t, dir, "flotilla-agent", "../../cmd/flotilla-agent", "1.0.0-sl")
	v2 := build(t, dir, "flotilla-agent-2", "../../cmd/flotilla-agent", "2.0.0-sl")
	srv := agenttest.New(t)
	data := filepath.Join(dir, "data")
	side := filepath.Join(dir, "sideload")

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
	tgt, online := gen(release.RoleTargets, 2), gen(release.RoleOnline, 1)[0]
	repo, err := release.Init(release.RootKeys{Root: gen(release.RoleRoot, 1), Targets: tgt, Online: online, Threshold: 1}, time.Now(), release.DefaultExpiry)
	if err != nil {
		t.Fatal(err)
	}
	dk, _ := release.GenerateKey(release.RoleOnline)
	director, err := release.NewDirector(dk, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := install.Provision(filepath.Join(data, "bundles"), repo.Roots[0], director.Root()); err != nil {
		t.Fatal(err)
	}

	// The bundle: the 2.0 binary as the native variant for this platform.
	src := filepath.Join(dir, "bundle-src")
	os.MkdirAll(src, 0o755)
	bin, _ := os.ReadFile(v2)
	os.WriteFile(filepath.Join(src, "flotilla-agent"), bin, 0o755)
	os.WriteFile(filepath.Join(src, "bundle.toml"), []byte(fmt.Sprintf(`name = "flotilla-agent"
release = 2
version = "2.0.0-sl"
kind = "agent"

[[variants]]
runtime = "native"
entry = "flotilla-agent"
platforms = ["%s/%s"]
`, goruntime.GOOS, goruntime.GOARCH)), 0o644)
	raw, _, err := bundle.Build(src, bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	target := release.TargetPath("flotilla-agent", 2)
	if _, err := repo.AddTarget(target, raw, release.ReleaseCustom{Model: "flotilla-agent", ReleaseCounter: 2, Version: "2.0.0-sl"}, tgt[:1], time.Now(), release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Publish(online, time.Now(), release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}

	t.Setenv("FLOTILLA_SIDELOAD_WAIVE_DIRECTOR", "true")
	mark := srv.Mark()
	sock := filepath.Join(dir, "diag.sock")
	r := startWith(t, v1, data, srv, "-sideload-dir", side, "-diag-socket", sock)
	birthVersion(t, srv, mark, "1.0.0-sl")

	mark = srv.Mark()
	tmp := filepath.Join(side, ".agent-2")
	for name, body := range repo.Metadata() {
		os.MkdirAll(filepath.Join(tmp, "release"), 0o755)
		os.WriteFile(filepath.Join(tmp, "release", name), body, 0o644)
	}
	os.WriteFile(filepath.Join(tmp, "manifest"), raw, 0o644)
	os.WriteFile(filepath.Join(tmp, "target"), []byte(target+"\n"), 0o644)
	os.MkdirAll(filepath.Join(tmp, "files"), 0o755)
	os.WriteFile(filepath.Join(tmp, "files", "flotilla-agent"), bin, 0o755)
	if err := os.Rename(tmp, filepath.Join(side, "agent-2")); err != nil {
		t.Fatal(err)
	}
	birthVersion(t, srv, mark, "2.0.0-sl")
	up := selfupdate.New(data)
	eventually(t, "2.0 confirmed", func() bool { st, _ := up.State(); return !st.Pending && st.ActiveVersion == "2.0.0-sl" })
	// Running 2.0 with the bundle still in the folder: no restart loop.
	mark = srv.Mark()
	time.Sleep(2 * time.Second)
	for _, m := range srv.Messages()[mark:] {
		if strings.HasSuffix(m.Topic, "/birth") {
			t.Fatalf("the agent restarted again after confirming:\n%s", r.log)
		}
	}
	// The 1.0 CLI asks the 2.0 agent over the diag socket: one protocol.
	out, err := exec.Command(v1, "diag", "-socket", sock, "-data-dir", data, "status", "-json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"version": "2.0.0-sl"`) || !strings.Contains(string(out), `"source": "agent"`) {
		t.Errorf("diag status from the 1.0 CLI: %v\n%s", err, out)
	}
	if !strings.Contains(r.log.String(), "agent binary staged; restarting into it") || !strings.Contains(r.log.String(), "agent update confirmed") {
		t.Errorf("log:\n%s", r.log)
	}
	r.stop(t)
}
