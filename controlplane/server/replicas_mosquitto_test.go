package server_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestReplicaFailoverMosquitto is issue 11's failover: two control-plane
// replicas share one PostgreSQL database and one Mosquitto (dynamic
// security); the second replica is given the first one's release keys
// and reads the bundles from the database. Real agents with
// the digits model take part in a staged rollout; mid-rollout the
// replica running the scheduler stops, the other takes the lease and the
// rollout completes — every device assigned exactly once, each reporting
// the release to the surviving replica.
func TestReplicaFailoverMosquitto(t *testing.T) {
	shared := newSharedServices(t)
	start := func(dir string) *server.Server {
		t.Helper()
		cfg := shared.config(t, dir)
		cfg.Rollouts = server.RolloutConfig{Every: 100 * time.Millisecond}
		return shared.start(t, cfg)
	}
	dirA := t.TempDir()
	keys := operatorKeys(t, dirA)
	a := start(dirA)
	op := newOperator(t, a, dirA, keys)
	op.release(digitsSource(t, "1", shortProbation(t)), "1")

	// The second replica: given the first one's keys; bundles and release
	// metadata it reads from the database.
	dirB := t.TempDir()
	shareKeys(t, dirA, dirB)
	bsrv := start(dirB)

	c := adminClient(t, a, dirA)
	ids := []string{"dev-0", "dev-1", "dev-2"}
	for _, id := range ids {
		et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		startRolloutAgent(t, op, id, filepath.Join(t.TempDir(), id), et.Token)
	}
	v, err := c.CreateRollout(context.Background(), []byte("bundle: {model: digits, release: 1}\n"+
		"stages: [{name: canary, count: 1, bake: 3s}, {percent: 100}]\n"))
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
	if last.Phase != "running" || last.Stage != 0 {
		t.Fatalf("before the failover: %+v", last)
	}

	// The scheduler's replica stops mid-rollout (the canary baking).
	leader, other := a, bsrv
	if bsrv.SchedulerLeading() {
		leader, other = bsrv, a
	}
	if !leader.SchedulerLeading() || other.SchedulerLeading() {
		t.Fatalf("leading: a %v, b %v; want exactly one", a.SchedulerLeading(), bsrv.SchedulerLeading())
	}
	// Summaries the gates read, stored through the surviving replica as
	// its ingest would (the agents serve no inference here).
	reportTelemetry(t, other, ids, time.Now)
	leader.Close()
	within(t, 30*time.Second, "the other replica leads", func() bool { return other.SchedulerLeading() })

	oc := adminClient(t, other, dirA) // the token is in the shared database
	within(t, time.Minute, "rollout completed by the other replica", func() bool {
		last, err = oc.Rollout(context.Background(), v.ID, true)
		return err == nil && last.Phase == "completed" && last.Devices["committed"] == len(ids)
	})
	audit, err := oc.RolloutAudit(context.Background(), v.ID, 0)
	if err != nil {
		t.Fatal(err)
	}
	assigned := map[string]int{}
	for _, e := range audit {
		if e.Action == "rollout.assign" {
			assigned[strings.Fields(e.Detail)[1]]++
		}
	}
	for _, id := range ids {
		if assigned[id] != 1 {
			t.Errorf("%s assigned %d times across the failover: %v", id, assigned[id], audit)
		}
		if m := reportedDigits(other, id); m.GetActiveRelease() != 1 {
			t.Errorf("%s reports %v to the surviving replica", id, m)
		}
	}
}
