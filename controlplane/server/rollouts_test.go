package server_test

import (
	"context"
	"encoding/json"
	"expvar"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// reportTelemetry stores, every 100 ms until the test ends or stop is
// called, one window summary for each device reporting a digits release
// active, as the telemetry ingest stores what agents send, timed by now.
// (The agents here serve no inference requests, so they have nothing to
// summarise themselves.)
func reportTelemetry(t *testing.T, srv *server.Server, ids []string, now func() time.Time) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	stop = func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	epoch := fmt.Sprintf("e%d", now().UnixNano())
	go func() {
		defer wg.Done()
		seq := uint64(0)
		for ctx.Err() == nil {
			seq++
			var msgs []store.TelemetryMessage
			now := now().UnixMilli()
			for _, id := range ids {
				rel := reportedDigits(srv, id).GetActiveRelease()
				if rel == 0 {
					continue
				}
				s := &pb.WindowSummary{Model: "digits", Release: rel, StartMs: now - 50, EndMs: now, Windows: 1, Requests: 500}
				b, err := wire.Encode(s)
				if err != nil {
					t.Error(err)
					return
				}
				msgs = append(msgs, store.TelemetryMessage{DeviceID: id, Epoch: epoch, Sequence: seq, ReceivedAt: now,
					Summaries: []store.StoredSummary{{DeviceID: id, Epoch: epoch, Sequence: seq, Model: "digits", Release: rel,
						Slot: "a", StartMs: now - 50, EndMs: now, Requests: 500, Payload: b}}})
			}
			if len(msgs) > 0 {
				if _, err := srv.Store().StoreTelemetry(ctx, msgs); err != nil && ctx.Err() == nil {
					t.Error(err)
					return
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return stop
}

// TestRolloutThroughServer runs staged rollouts over real agents running
// the digits model (lifecycle and ONNX plugin) on the embedded broker: a
// two-stage rollout of release 1 reaches every device, each reporting it
// active and healthy; a rollout of release 2 aborted in its canary stage
// sends the canary back and never reaches the others; every operator
// action is in the rollout's audit trail with who and why.
func TestRolloutThroughServer(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 200 * time.Millisecond, Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	// Probation of a second, not ten minutes: the rollout waits for it.
	op.release(digitsSource(t, "1", shortProbation(t)), "1")
	op.release(digitsSource(t, "2", shortProbation(t)), "2")
	op.release(digitsSource(t, "3", shortProbation(t)), "3") // release 1's content, to roll back to

	c := adminClient(t, srv, dir)
	ids := []string{"dev-0", "dev-1", "dev-2"}
	for _, id := range ids {
		et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		startRolloutAgent(t, op, id, filepath.Join(t.TempDir(), id), et.Token)
	}
	reportTelemetry(t, srv, ids, time.Now)

	spec := filepath.Join(t.TempDir(), "rollout.yaml")
	write := func(s string) {
		if err := os.WriteFile(spec, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("name: digits 1\nbundle: {model: digits, release: 1}\nstages:\n  - {name: canary, count: 1}\n  - {percent: 100}\n" +
		"gates: {window: 1m, min_devices_reporting: 1}\n")
	out := op.run("rollout", "create", "-f", spec)
	if f := strings.Fields(out); len(f) < 3 || f[0] != "created" {
		t.Fatalf("rollout create: %q", out)
	}
	id := strings.Fields(out)[2]
	var last api.RolloutView
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last view of %s: %+v", id, last)
		}
	})
	eventually(t, "rollout of release 1 completed", func() bool {
		v, err := c.Rollout(context.Background(), id, true)
		last = v
		return err == nil && v.Phase == "completed" && v.Devices["committed"] == len(ids)
	})
	for _, d := range ids {
		if m := reportedDigits(srv, d); m.GetActiveRelease() != 1 || m.GetHealth() != pb.ModelState_HEALTH_HEALTHY {
			t.Errorf("%s reports %v", d, m)
		}
	}
	show := op.run("rollout", "show", id)
	for _, want := range []string{"phase completed, stage 2 of 2", "committed", "[##############################]", "3 of 3 devices reporting"} {
		if !strings.Contains(show, want) {
			t.Errorf("rollout show lacks %q:\n%s", want, show)
		}
	}
	audit, err := c.RolloutAudit(context.Background(), id, 0)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]int{}
	for _, e := range audit {
		actions[e.Action]++
	}
	if actions["rollout.create"] != 1 || actions["rollout.assign"] != len(ids) || actions["rollout.advance"] != 1 || actions["rollout.complete"] != 1 {
		t.Errorf("audit actions %v", actions)
	}

	// Release 2: the canary stage bakes for an hour; abort it once the
	// canary has committed. It cannot install release 1 again (a lower
	// counter), so it goes back to release 3, release 1's content.
	write("bundle: {model: digits, release: 2, rollback_release: 3}\nstages:\n  - {name: canary, count: 1, bake: 1h}\n  - {percent: 100}\n" +
		"gates: {window: 1m, min_devices_reporting: 1}\n")
	v2, err := c.CreateRollout(context.Background(), mustRead(t, spec))
	if err != nil {
		t.Fatal(err)
	}
	if v2.Devices["assigned"] != 1 {
		t.Fatalf("canary not assigned at creation: %+v", v2.Devices)
	}
	if _, err := c.RolloutAction(context.Background(), v2.ID, "resume", ""); err == nil || !strings.Contains(err.Error(), "409") {
		t.Errorf("resuming a running rollout: %v, want a 409", err)
	}
	eventually(t, "canary committed release 2", func() bool {
		v, err := c.Rollout(context.Background(), v2.ID, false)
		return err == nil && v.Devices["committed"] == 1
	})
	v, err := c.Rollout(context.Background(), v2.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	canary := v.DeviceStates[0].Device
	if len(v.DeviceStates) != 1 || reportedDigits(srv, canary).GetActiveRelease() != 2 {
		t.Fatalf("canary stage: %+v, %s reports %v", v.DeviceStates, canary, reportedDigits(srv, canary))
	}
	op.run("rollout", "abort", v2.ID, "-reason", "wrong labels file")
	eventually(t, "aborted rollout rolled back", func() bool {
		v, err := c.Rollout(context.Background(), v2.ID, false)
		return err == nil && v.Phase == "rolled_back" && v.Devices["rolled_back"] == 1
	})
	if w := op.run("rollout", "watch", v2.ID, "-every", "100ms"); !strings.Contains(w, "phase rolled_back") ||
		!strings.Contains(w, "rolled_back  [##############################]  1") || !strings.Contains(w, "wrong labels file") {
		t.Errorf("rollout watch of a rolled-back rollout:\n%s", w)
	}
	for _, d := range ids {
		m := reportedDigits(srv, d)
		if d == canary && (m.GetActiveRelease() != 3 || m.GetHealth() == pb.ModelState_HEALTH_UNHEALTHY) {
			t.Errorf("the canary %s did not go back to release 3: %v", d, m)
		}
		if d != canary && (m.GetActiveRelease() != 1 || m.GetStagedRelease() >= 2) {
			t.Errorf("%s, outside the canary stage, was sent a later release: %v", d, m)
		}
	}
	audit, err = c.RolloutAudit(context.Background(), v2.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit {
		if e.Action == "rollout.rollback_all" && strings.HasPrefix(e.Actor, "token:") && strings.Contains(e.Detail, "wrong labels file") {
			found = true
		}
	}
	if !found {
		t.Errorf("the abort is not in the audit trail with who and why: %+v", audit)
	}
}

// startRolloutAgent is startModelAgent with the host's facts: the agent
// lists the ONNX runtime (its plugin folder) in them by itself, which the
// rollout's preflight asks for.
func startRolloutAgent(t *testing.T, o operator, id, dataDir, token string) (stop func()) {
	t.Helper()
	a, err := agent.New(agent.Config{DataDir: dataDir, DeviceID: id, ServerURL: o.srv.APIURL(), EnrolToken: token,
		CAFingerprint: o.srv.CAFingerprint(), MQTTURL: o.srv.MQTTURL(), HeartbeatInterval: time.Second, Version: "rollouts-test",
		Logger: testLogger(t),
		Models: &agent.ModelsConfig{PluginDir: onnxPluginDir(t), ORTLib: ortLib(t), InferAddr: "127.0.0.1:0",
			InferSocket: filepath.Join(dataDir, agent.InferSocketName),
			Lifecycle: lifecycle.Config{CheckInterval: 50 * time.Millisecond,
				DefaultPolicy: lifecycle.Policy{Duration: 300 * time.Millisecond}}}})
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
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	eventually(t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
	return stop
}

func mustRead(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRolloutAPIRefusals: the rollout routes refuse what they must, with
// the status that says why, and create nothing when they refuse.
func TestRolloutAPIRefusals(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	srv := startServer(t, dir)
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	admin := adminClient(t, srv, dir)
	ctx := context.Background()
	viewerTok, err := admin.CreateAPIToken(ctx, api.APITokenRequest{Name: "watcher", Role: "viewer"})
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.PinnedClientTLS(srv.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	viewer := apiclient.New(srv.APIURL(), viewerTok.Token, &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}})

	good := []byte("bundle: {model: digits, release: 1}\nstages: [{count: 1}]\n")
	for name, c := range map[string]struct {
		spec []byte
		want string
	}{
		"unknown field":     {[]byte("bundle: {model: digits, release: 1}\nstages: [{count: 1}]\nstagse: []\n"), "HTTP 400"},
		"wrong type":        {[]byte("bundle: {model: digits, release: one}\nstages: [{count: 1}]\n"), "HTTP 400"},
		"truncated JSON":    {[]byte(`{"bundle": {"model": "digits", "release": 1}, "stages": [{"count"`), "HTTP 400"},
		"no stages":         {[]byte("bundle: {model: digits, release: 1}\n"), "HTTP 400"},
		"unreleased":        {[]byte("bundle: {model: digits, release: 9}\nstages: [{count: 1}]\n"), "HTTP 404"},
		"unknown rollback":  {[]byte("bundle: {model: digits, release: 1, rollback_release: 9}\nstages: [{count: 1}]\n"), "HTTP 404"},
		"over the size cap": {append(append([]byte{}, good...), []byte("# "+strings.Repeat("x", 300<<10)+"\n")...), "HTTP 400"},
	} {
		if _, err := admin.CreateRollout(ctx, c.spec); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %s", name, err, c.want)
		}
	}
	if _, err := viewer.CreateRollout(ctx, good); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("a viewer created a rollout: %v", err)
	}
	if vs, err := admin.ListRollouts(ctx, "", "", 0); err != nil || len(vs) != 0 {
		t.Fatalf("refused creations left rollouts: %v %v", vs, err)
	}

	v, err := admin.CreateRollout(ctx, good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := viewer.Rollout(ctx, v.ID, true); err != nil {
		t.Errorf("a viewer cannot read a rollout: %v", err)
	}
	if _, err := viewer.RolloutAction(ctx, v.ID, "pause", "mine"); err == nil || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("a viewer paused a rollout: %v", err)
	}
	for name, c := range map[string]struct {
		id, action, reason, want string
	}{
		"unknown rollout": {"ro-nope", "pause", "", "HTTP 404"},
		"unknown action":  {v.ID, "explode", "", "HTTP 404"},
		"long reason":     {v.ID, "pause", strings.Repeat("r", 2000), "HTTP 400"},
		"resume running":  {v.ID, "resume", "", "HTTP 409"},
		"traversal":       {"../../v1/tokens", "pause", "", "HTTP 404"},
	} {
		if _, err := admin.RolloutAction(ctx, c.id, c.action, c.reason); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %s", name, err, c.want)
		}
	}
	if _, err := admin.RolloutAudit(ctx, "ro-nope", 0); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Errorf("audit of an unknown rollout: %v", err)
	}
	after, err := admin.Rollout(ctx, v.ID, false)
	if err != nil || after.Phase != "running" {
		t.Fatalf("refused actions changed the rollout: %+v %v", after, err)
	}
	audit, err := viewer.RolloutAudit(ctx, v.ID, 0)
	if err != nil || len(audit) != 1 || audit[0].Action != "rollout.create" {
		t.Errorf("audit after refusals: %+v %v", audit, err)
	}
}

// passes is how many rollout passes srv has run.
func passes(srv *server.Server) int64 {
	v, ok := srv.Metrics().Get("rollout_passes").(*expvar.Int)
	if !ok {
		return 0
	}
	return v.Value()
}

// rejectingGolden makes a digits release whose golden check fails.
func rejectingGolden(t *testing.T) func(dir string) {
	return func(d string) {
		bad := strings.Repeat("[1,0,0,0,0,0,0,0,0,0],", 3) + "[1,0,0,0,0,0,0,0,0,0]"
		if err := os.WriteFile(filepath.Join(d, "golden", "probabilities.json"), []byte("["+bad+"]"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolloutRollbackAwaitsTheDevice: a canary that refused the release
// (so it still reports its previous one) is sent back by an abort while
// it is switched off. Its last report shows the previous release active,
// but answers the desired state from before it was sent back, so through
// every pass until it returns the device stays rolling back, and the
// rollout with it; once it reconnects and answers the new desired state
// it counts as rolled back. (Before the server supplied revisions, the
// abort's own pass counted it back.)
func TestRolloutRollbackAwaitsTheDevice(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 200 * time.Millisecond, Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	op.release(digitsSource(t, "2", rejectingGolden(t)), "2")

	c := adminClient(t, srv, dir)
	et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "dev-0", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	agentDir := filepath.Join(t.TempDir(), "dev-0")
	stop := startRolloutAgent(t, op, "dev-0", agentDir, et.Token)
	op.run("devices", "assign", "dev-0", "digits", "1")
	eventually(t, "release 1 active", func() bool { return reportedDigits(srv, "dev-0").GetActiveRelease() == 1 })

	v, err := c.CreateRollout(context.Background(), []byte("bundle: {model: digits, release: 2}\nstages: [{count: 1}, {percent: 100}]\n"+
		"gates: {window: 1m, rollbacks: {max: 0}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var last api.RolloutView
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last view: %+v; dev-0 reports %v", last, reportedDigits(srv, "dev-0"))
		}
	})
	eventually(t, "the refusal paused the rollout", func() bool {
		v, err := c.Rollout(context.Background(), v.ID, true)
		last = v
		return err == nil && v.Phase == "paused" && v.Devices["failed"] == 1
	})
	if m := reportedDigits(srv, "dev-0"); m.GetActiveRelease() != 1 || !strings.Contains(m.GetLastError(), "release 2 rejected") {
		t.Fatalf("dev-0 reports %v", m)
	}
	stop()

	aborted, err := c.RolloutAction(context.Background(), v.ID, "abort", "refused on the canary")
	if err != nil {
		t.Fatal(err)
	}
	if aborted.Phase != "rolling_back" {
		t.Fatalf("after the abort: %+v", aborted)
	}
	from := passes(srv)
	eventually(t, "ten passes after the abort", func() bool { return passes(srv) >= from+10 })
	v, err = c.Rollout(context.Background(), v.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Phase != "rolling_back" || len(v.DeviceStates) != 1 || v.DeviceStates[0].Phase != "rolling_back" || v.DeviceStates[0].RollbackTo != 1 {
		t.Fatalf("with the device away, after ten passes: %+v", v)
	}
	if m := reportedDigits(srv, "dev-0"); m.GetActiveRelease() != 1 {
		t.Fatalf("dev-0's last report changed while it was away: %v", m)
	}

	startRolloutAgent(t, op, "dev-0", agentDir, "")
	eventually(t, "rolled back once the device answered", func() bool {
		v, err := c.Rollout(context.Background(), v.ID, false)
		return err == nil && v.Phase == "rolled_back" && v.Devices["rolled_back"] == 1
	})
	if m := reportedDigits(srv, "dev-0"); m.GetActiveRelease() != 1 {
		t.Fatalf("dev-0 reports %v", m)
	}
}

// freeAddr is a loopback address free for a listener now.
func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// within is eventually with a longer wait, for agents that reconnect with
// backoff.
func within(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRolloutAcrossRestart stops the control plane (and the agents)
// mid-rollout and starts it again on the same data folder and addresses:
// the canary has committed and bakes for an hour when it stops; it starts
// again an hour later (its clock moved on), knows from the store what each
// device last reported before any is back, finishes the rollout once the
// agents are, and switches every device exactly once (one assignment each
// in the audit trail).
func TestRolloutAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	apiAddr, mqttAddr := freeAddr(t), freeAddr(t)
	start := func() *server.Server {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: apiAddr, MQTTListen: mqttAddr, Version: "test", Now: now,
			WaveDelay: 200 * time.Millisecond, Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 100 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		return srv
	}
	srv := start()
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", shortProbation(t)), "1")
	c := adminClient(t, srv, dir)
	ids := []string{"dev-0", "dev-1", "dev-2"}
	agentDirs := map[string]string{}
	var stops []func()
	for _, id := range ids {
		et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		agentDirs[id] = filepath.Join(t.TempDir(), id)
		stops = append(stops, startRolloutAgent(t, op, id, agentDirs[id], et.Token))
	}
	// dev-3 runs release 1 already: the rollout skips it, before the
	// restart and after.
	et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "dev-3", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	agentDirs["dev-3"] = filepath.Join(t.TempDir(), "dev-3")
	stops = append(stops, startRolloutAgent(t, op, "dev-3", agentDirs["dev-3"], et.Token))
	op.run("devices", "assign", "dev-3", "digits", "1")
	eventually(t, "dev-3 runs release 1", func() bool { return reportedDigits(srv, "dev-3").GetActiveRelease() == 1 })
	stopTelemetry := reportTelemetry(t, srv, ids, now)

	v, err := c.CreateRollout(context.Background(), []byte("bundle: {model: digits, release: 1}\n"+
		"stages: [{name: canary, count: 1, bake: 1h}, {percent: 100}]\ngates: {window: 1m, min_devices_reporting: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var last api.RolloutView
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last view: %+v", last)
		}
	})
	eventually(t, "canary committed", func() bool {
		last, err = c.Rollout(context.Background(), v.ID, true)
		return err == nil && last.Devices["committed"] == 1
	})
	if last.Phase != "running" || last.Stage != 0 || len(last.DeviceStates) != 2 || last.Devices["skipped"] != 1 {
		t.Fatalf("before the restart: %+v", last)
	}
	canary := last.DeviceStates[0].Device
	if canary == "dev-3" {
		canary = last.DeviceStates[1].Device
	}

	// The agents stop too, so that what the restarted server knows of
	// them is only what it stored.
	stopTelemetry()
	for _, stop := range stops {
		stop()
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(time.Hour + time.Minute))
	srv = start()
	op.srv = srv
	for _, id := range append(ids, "dev-3") {
		want := map[bool]uint64{true: 1, false: 0}[id == canary || id == "dev-3"]
		if _, ok := srv.ReportedRevision(id); !ok || reportedDigits(srv, id).GetActiveRelease() != want {
			t.Errorf("after the restart, before %s reports again: known %v, release %d active; want release %d", id, ok, reportedDigits(srv, id).GetActiveRelease(), want)
		}
	}
	// What each device last reported is in the store, not only in the
	// stopped process: the canary runs release 1, the others nothing.
	reps, err := srv.Store().ListReports(context.Background(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != len(ids)+1 {
		t.Fatalf("stored reports after the restart: %d, want %d", len(reps), len(ids)+1)
	}
	for _, r := range reps {
		var rs pb.ReportedState
		if err := wire.Decode(r.Payload, len(r.Payload), &rs); err != nil {
			t.Fatal(err)
		}
		active := uint64(0)
		for _, m := range rs.GetModels() {
			if m.GetName() == "digits" {
				active = m.GetActiveRelease()
			}
		}
		if want := map[bool]uint64{true: 1, false: 0}[r.DeviceID == canary || r.DeviceID == "dev-3"]; active != want || r.DesiredRevision == 0 {
			t.Errorf("stored report of %s: release %d active at revision %d, want release %d", r.DeviceID, active, r.DesiredRevision, want)
		}
	}
	c = adminClient(t, srv, dir)
	reportTelemetry(t, srv, ids, now)
	for id, d := range agentDirs {
		startRolloutAgent(t, op, id, d, "")
	}
	within(t, time.Minute, "rollout completed after the restart", func() bool {
		last, err = c.Rollout(context.Background(), v.ID, true)
		return err == nil && last.Phase == "completed" && last.Devices["committed"] == len(ids)
	})
	if last.Devices["skipped"] != 1 {
		t.Errorf("dev-3 is no longer skipped: %+v", last.DeviceStates)
	}
	for _, id := range ids {
		if m := reportedDigits(srv, id); m.GetActiveRelease() != 1 {
			t.Errorf("%s reports %v", id, m)
		}
	}
	audit, err := c.RolloutAudit(context.Background(), v.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	assigned := map[string]int{}
	actions := map[string]int{}
	for _, e := range audit {
		actions[e.Action]++
		if e.Action == "rollout.assign" {
			assigned[strings.Fields(e.Detail)[1]]++
		}
	}
	if assigned["dev-3"] != 0 {
		t.Errorf("dev-3, already on release 1, assigned %d times", assigned["dev-3"])
	}
	for _, id := range ids {
		if assigned[id] != 1 {
			t.Errorf("%s assigned %d times: %v", id, assigned[id], audit)
		}
	}
	if actions["rollout.advance"] != 1 || actions["rollout.complete"] != 1 {
		t.Errorf("audit actions %v", actions)
	}
}

// shortProbation edits a digits source for a probation of a second, not
// ten minutes.
func shortProbation(t *testing.T) func(dir string) {
	return func(dir string) {
		toml := filepath.Join(dir, "bundle.toml")
		b := mustRead(t, toml)
		if err := os.WriteFile(toml, []byte(strings.Replace(string(b), `duration = "10m"`, `duration = "1s"`, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRolloutAbortWithoutRollbackRelease: a spec without
// bundle.rollback_release, aborted after both canaries committed. dev-0
// ran release 1 before: it cannot install the lower counter again, so it
// is sent to release 3, which the operator re-released from release 1
// (flotctl bundle rerelease), and ends there. dev-1 ran nothing before:
// its assignment is withdrawn and, since it runs release 2 with nothing to
// go back to, it is listed stranded. The rollout ends rolled back.
func TestRolloutAbortWithoutRollbackRelease(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 200 * time.Millisecond, Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	src1 := digitsSource(t, "1", shortProbation(t))
	op.release(src1, "1")
	op.release(digitsSource(t, "2", shortProbation(t)), "2")
	c := adminClient(t, srv, dir)
	ids := []string{"dev-0", "dev-1"}
	for _, id := range ids {
		et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		startRolloutAgent(t, op, id, filepath.Join(t.TempDir(), id), et.Token)
	}
	op.run("devices", "assign", "dev-0", "digits", "1")
	eventually(t, "dev-0 runs release 1", func() bool {
		return reportedDigits(srv, "dev-0").GetActiveRelease() == 1 && reportedDigits(srv, "dev-0").GetHealth() == pb.ModelState_HEALTH_HEALTHY
	})
	reportTelemetry(t, srv, ids, time.Now)

	v, err := c.CreateRollout(context.Background(), []byte("bundle: {model: digits, release: 2}\n"+
		"stages: [{name: canary, count: 2, bake: 1h}, {percent: 100}]\ngates: {window: 1m, min_devices_reporting: 1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var last api.RolloutView
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last view: %+v", last)
		}
	})
	eventually(t, "both canaries committed release 2", func() bool {
		last, err = c.Rollout(context.Background(), v.ID, true)
		return err == nil && last.Devices["committed"] == 2
	})

	out := op.run("-json", "bundle", "rerelease", "digits", "1", "-keys", keys, "-store", src1+".bundle")
	var rr struct {
		Release uint64 `json:"release"`
		Digest  string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(out), &rr); err != nil || rr.Release != 3 {
		t.Fatalf("rerelease: %v: %s", err, out)
	}
	op.run("release", "push", "-keys", keys)
	op.run("bundle", "push", "-store", src1+".bundle", rr.Digest)

	op.run("rollout", "abort", v.ID, "-reason", "test")
	eventually(t, "rolled back", func() bool {
		last, err = c.Rollout(context.Background(), v.ID, true)
		return err == nil && last.Phase == "rolled_back"
	})
	got := map[string]api.RolloutDeviceView{}
	for _, d := range last.DeviceStates {
		got[d.Device] = d
	}
	if d := got["dev-0"]; d.Phase != "rolled_back" || d.From != 1 || d.RollbackTo != 3 {
		t.Errorf("dev-0: %+v, want rolled back to the re-release 3", d)
	}
	if d := got["dev-1"]; d.Phase != "stranded" || d.From != 0 || !strings.Contains(d.Reason, "nothing to go back to") {
		t.Errorf("dev-1: %+v, want stranded", d)
	}
	if m := reportedDigits(srv, "dev-0"); m.GetActiveRelease() != 3 {
		t.Errorf("dev-0 reports %v, want release 3 active", m)
	}
	if m := reportedDigits(srv, "dev-1"); m.GetActiveRelease() != 2 {
		t.Errorf("dev-1 reports %v", m)
	}
}

// TestRolloutNudgesSilentDevices: an online device that never reported
// (its report lost, or it missed its desired state) is held back by a
// rollout, which publishes its desired state again under a new revision,
// once per RetryEvery, so that it reports; once it does, it is assigned.
func TestRolloutNudgesSilentDevices(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 50 * time.Millisecond, RetryEvery: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	admin := adminClient(t, srv, dir)
	et, err := admin.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "quiet", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, srv, et.Token, "quiet")
	d, err := connect(t, srv, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}
	if tok := d.client.Subscribe(topic.Default().Device(topic.Desired, "quiet"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	next := func(what string) *pb.DesiredState {
		t.Helper()
		select {
		case m := <-d.msgs:
			var ds pb.DesiredState
			if err := wire.DecodeTopic(topic.Desired, m.Payload(), &ds); err != nil {
				t.Fatal(err)
			}
			return &ds
		case <-time.After(wait):
			t.Fatalf("no desired state: %s", what)
		}
		return nil
	}
	first := next("the enrolment's")
	birth, _ := wire.Encode(&pb.Birth{DeviceId: "quiet", AgentVersion: "9.9", ProtocolVersion: wire.ProtocolVersion,
		Facts: &pb.Facts{Os: "linux", Arch: "amd64", Runtimes: []*pb.RuntimeInfo{{Name: "onnx"}}}})
	publishProto(t, d, topic.Birth, birth)
	online, _ := wire.Encode(&pb.Status{DeviceId: "quiet", State: pb.Status_STATE_ONLINE})
	publishProto(t, d, topic.Status, online)
	eventually(t, "device online", func() bool {
		v, err := admin.Device(ctx, "quiet")
		return err == nil && v.Online
	})

	v, err := admin.CreateRollout(context.Background(), []byte("bundle: {model: digits, release: 1}\nstages: [{percent: 100}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	nudge := next("the rollout's nudge")
	if nudge.GetRevision() <= first.GetRevision() || len(nudge.GetDirectorMetadata()) != 0 {
		t.Fatalf("nudge: revision %d after %d, director metadata %d", nudge.GetRevision(), first.GetRevision(), len(nudge.GetDirectorMetadata()))
	}
	from := passes(srv)
	eventually(t, "ten more passes", func() bool { return passes(srv) >= from+10 })
	select {
	case m := <-d.msgs:
		t.Fatalf("nudged again within RetryEvery: %d bytes", len(m.Payload()))
	default:
	}
	if v, err := admin.Rollout(context.Background(), v.ID, false); err != nil || len(v.Devices) != 0 {
		t.Fatalf("the unreported device was sorted: %+v %v", v.Devices, err)
	}
	// It answers: assigned (the assignment is the next desired state).
	rep, _ := wire.Encode(&pb.ReportedState{DeviceId: "quiet", SentAtMs: time.Now().UnixMilli(), DesiredRevision: nudge.GetRevision()})
	publishProto(t, d, topic.Reported, rep)
	assigned := next("the assignment")
	if assigned.GetRevision() <= nudge.GetRevision() || len(assigned.GetDirectorMetadata()) == 0 {
		t.Fatalf("assignment: %v", assigned)
	}
	eventually(t, "assigned", func() bool {
		v, err := admin.Rollout(context.Background(), v.ID, false)
		return err == nil && v.Devices["assigned"] == 1
	})
}
