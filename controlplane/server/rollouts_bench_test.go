package server_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/firmware/hostfacts"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TestRolloutFleetBenchmark runs rollouts through the whole server over a
// fleet of real agents (full protocol, one MQTT session each, on the
// embedded broker), and logs:
//
//   - switching: from a rollout's creation to every device reporting the
//     release staged (the agents run no model lifecycle, so the server
//     counts a staged release as running, RolloutConfig.CommitOnStaged):
//     devices switched per minute;
//   - breach to decision: from a breaching summary committed to the store
//     (the canaries' error rate) to the rollback decision stored;
//   - abort to rolled back: from an abort of a rollout at 100 % to every
//     device reporting the rollback release, and the rollout rolled back.
//
// It is not run in CI:
//
//	FLOTILLA_BENCH=1 go test ./controlplane/server -run TestRolloutFleetBenchmark -v -timeout 60m
//
// FLOTILLA_BENCH_DEVICES sets the fleet size (default 1000);
// FLOTILLA_BENCH_EVERY the scheduler's tick (default 1s).
func TestRolloutFleetBenchmark(t *testing.T) {
	if os.Getenv("FLOTILLA_BENCH") == "" {
		t.Skip("set FLOTILLA_BENCH=1 to run the rollout fleet benchmark")
	}
	n := 1000
	if s := os.Getenv("FLOTILLA_BENCH_DEVICES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 20 {
			t.Fatalf("FLOTILLA_BENCH_DEVICES=%q: a number ≥ 20", s)
		}
		n = v
	}
	every := time.Second
	if s := os.Getenv("FLOTILLA_BENCH_EVERY"); s != "" {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		every = v
	}
	long := 20 * time.Minute
	if s := os.Getenv("FLOTILLA_BENCH_WAIT"); s != "" {
		if v, err := time.ParseDuration(s); err == nil {
			long = v
		}
	}

	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "bench",
		WaveDelay: time.Second, Logger: quiet, HeartbeatInterval: 5 * time.Minute,
		Rollouts: server.RolloutConfig{Every: every, CommitOnStaged: true}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	// Releases 2 and 4 carry 64 KiB of their own, so switching to them
	// fetches new chunks; 3 and 5 are release 1's content again.
	for _, rel := range []string{"1", "2", "3", "4", "5"} {
		var change func(string)
		if rel == "2" || rel == "4" {
			change = func(dir string) {
				b := make([]byte, 64<<10)
				_, _ = rand.Read(b)
				if err := os.WriteFile(filepath.Join(dir, "extra-"+rel+".bin"), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		op.release(digitsSource(t, rel, change), rel)
	}
	c := adminClient(t, srv, dir)
	et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: "bench", MaxUses: 2 * n})
	if err != nil {
		t.Fatal(err)
	}

	// The fleet: real agents whose facts list the ONNX runtime (the
	// bundle's variant), with no model lifecycle.
	facts, _ := hostfacts.Discover("/")
	if facts == nil {
		facts = &pb.Facts{}
	}
	facts.Runtimes = append(facts.Runtimes, &pb.RuntimeInfo{Name: "onnx"})
	actx, stopAgents := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { stopAgents(); wg.Wait() })
	ids := make([]string, n)
	agents := make([]*agent.Agent, n)
	start := time.Now()
	for i := range n {
		ids[i] = fmt.Sprintf("bench-%04d", i)
		a, err := agent.New(agent.Config{DataDir: filepath.Join(t.TempDir(), ids[i]), DeviceID: ids[i], ServerURL: srv.APIURL(),
			EnrolToken: et.Token, CAFingerprint: srv.CAFingerprint(), MQTTURL: srv.MQTTURL(), Version: "bench",
			HeartbeatInterval: 5 * time.Minute, Logger: quiet, Facts: func() *pb.Facts { return facts }})
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = a
		wg.Go(func() {
			if err := a.Run(actx); err != nil {
				t.Errorf("%s: %v", ids[i], err)
			}
		})
	}
	within(t, long, "every agent connected", func() bool {
		for _, a := range agents {
			if a.Status().State != agent.StateConnected {
				return false
			}
		}
		return true
	})
	t.Logf("%d agents enrolled and connected in %v", n, time.Since(start).Round(time.Millisecond))
	lastLog := time.Now()
	settleBy := time.Now().Add(2 * time.Minute)
	within(t, long, "every agent connected and reported", func() bool {
		connected, reporting := 0, 0
		for i, a := range agents {
			if a.Status().State == agent.StateConnected {
				connected++
			}
			if _, ok := srv.ReportedRevision(ids[i]); ok {
				reporting++
			}
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			t.Logf("%v: %d connected, %d reporting", time.Since(start).Round(time.Second), connected, reporting)
		}
		return connected == n && reporting == n || time.Now().After(settleBy)
	})
	// Devices still silent are held back by the rollouts (and nudged);
	// the figures are over the devices that report.
	var fleet []string
	for _, id := range ids {
		if _, ok := srv.ReportedRevision(id); ok {
			fleet = append(fleet, id)
		}
	}
	t.Logf("%d of %d agents reporting after %v; the figures are over them", len(fleet), n, time.Since(start).Round(time.Millisecond))
	ids, n = fleet, len(fleet)

	staged := func(id string) uint64 { return reportedDigits(srv, id).GetStagedRelease() }
	// settle waits until every device of ids reports rel staged, or none
	// more has for a minute; it returns how many do and when the last one
	// did, from t0.
	settle := func(what string, ids []string, rel uint64, t0 time.Time) (int, time.Duration) {
		last, lastAt, logged := -1, time.Now(), time.Now()
		for {
			on := 0
			for _, id := range ids {
				if staged(id) == rel {
					on++
				}
			}
			if on != last {
				last, lastAt = on, time.Now()
			}
			if on == len(ids) || time.Since(lastAt) > time.Minute {
				if on < len(ids) {
					t.Logf("%s: %d of %d devices never reported release %d", what, len(ids)-on, len(ids), rel)
				}
				return on, lastAt.Sub(t0)
			}
			if time.Since(logged) > 10*time.Second {
				logged = time.Now()
				t.Logf("%s: %d of %d on release %d", what, on, len(ids), rel)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	create := func(spec string) api.RolloutView {
		v, err := c.CreateRollout(context.Background(), []byte(spec))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	phase := func(id string) string {
		r, err := srv.Store().Rollout(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return r.Phase
	}
	perMinute := func(n int, d time.Duration) float64 { return float64(n) / d.Minutes() }

	// 1. Switching: release 1 to every device, no rate limit.
	t0 := time.Now()
	create("name: bench-1\nbundle: {model: digits, release: 1}\nstages: [{percent: 100}]\n")
	on, took := settle("switch to 1", ids, 1, t0)
	t.Logf("switch %d devices to release 1: %v (%.0f devices/minute)", on, took.Round(time.Millisecond), perMinute(on, took))

	// 2. Breach to decision: release 2 on a 1 % canary; its error rate
	// breaches the gate; the policy rolls it back to release 3.
	canaries := max(1, n/100)
	v2 := create(fmt.Sprintf("name: bench-2\nbundle: {model: digits, release: 2, rollback_release: 3}\n"+
		"stages: [{count: %d, bake: 1h}, {percent: 100}]\ngates: {window: 10m, min_devices_reporting: 1, min_requests: 1, error_rate: {max: 0.05}}\n"+
		"failure_policy: rollback\n", canaries))
	var canary []string
	var last api.RolloutView
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("rollout 2: %+v", last)
		}
	})
	committedAt, committed := time.Now(), -1
	within(t, long, "canaries on release 2", func() bool {
		v, err := c.Rollout(context.Background(), v2.ID, true)
		if err != nil {
			return false
		}
		last = v
		if k := v.Devices["committed"]; k != committed {
			committed, committedAt = k, time.Now()
		}
		if committed == 0 || committed < canaries && time.Since(committedAt) < time.Minute {
			return false
		}
		canary = canary[:0]
		for _, d := range v.DeviceStates {
			if d.Phase == "committed" {
				canary = append(canary, d.Device)
			}
		}
		return true
	})
	var msgs []store.TelemetryMessage
	now := time.Now().UnixMilli()
	for i, id := range canary {
		ws := &pb.WindowSummary{Model: "digits", Release: 2, StartMs: now - 1, EndMs: now, Windows: 1, Requests: 100, Errors: 50}
		b, err := wire.Encode(ws)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, store.TelemetryMessage{DeviceID: id, Epoch: "bench", Sequence: uint64(i + 1), ReceivedAt: now,
			Summaries: []store.StoredSummary{{DeviceID: id, Epoch: "bench", Sequence: uint64(i + 1), Model: "digits", Release: 2,
				StartMs: now - 1, EndMs: now, Requests: 100, Errors: 50, Payload: b}}})
	}
	if _, err := srv.Store().StoreTelemetry(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	tb := time.Now()
	within(t, long, "rollback decided", func() bool { return phase(v2.ID) != "running" })
	decided := time.Since(tb)
	if p := phase(v2.ID); p != "rolling_back" && p != "rolled_back" {
		t.Fatalf("after the breach: %s", p)
	}
	on, took = settle("canaries back", canary, 3, tb)
	t.Logf("breach → rollback decision: %v (tick %v); → %d of %d committed canaries on the rollback release: %v; rollout %s",
		decided.Round(time.Millisecond), every, on, len(canary), took.Round(time.Millisecond), phase(v2.ID))

	// 3. Abort to rolled back: release 4 to every device, then abort to
	// release 5 (the previous version re-released).
	t0 = time.Now()
	v4 := create("name: bench-4\nbundle: {model: digits, release: 4, rollback_release: 5}\nstages: [{percent: 100}]\n")
	on, took = settle("switch to 4", ids, 4, t0)
	t.Logf("switch %d devices to release 4: %v (%.0f devices/minute)", on, took.Round(time.Millisecond), perMinute(on, took))
	ta := time.Now()
	if _, err := c.RolloutAction(context.Background(), v4.ID, "abort", "bench"); err != nil {
		t.Fatal(err)
	}
	sent := time.Since(ta)
	on, took = settle("abort to 5", ids, 5, ta)
	t.Logf("abort → rollbacks sent (the abort's pass): %v; → %d devices report release 5: %v (%.0f devices/minute); rollout %s",
		sent.Round(time.Millisecond), on, took.Round(time.Millisecond), perMinute(on, took), phase(v4.ID))
}
