package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// TestOneSchedulerAmongReplicas: two servers on one PostgreSQL database
// hold one rollout scheduler between them; when its holder stops, the
// other takes the lease over at a higher epoch.
func TestOneSchedulerAmongReplicas(t *testing.T) {
	dsn := pgtest.Database(t)
	start := func(dir string) *server.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := server.New(ctx, server.Config{DataDir: dir, Database: dsn, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0",
			Version: "test", Rollouts: server.RolloutConfig{Every: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	a := start(dirA)
	shareKeys(t, dirA, dirB) // the second replica is given the first one's keys
	b := start(dirB)
	holder := func(s *server.Server) (uint64, string) {
		epoch, h, _, err := s.Store().LeaseHolder(context.Background(), "rollout-scheduler")
		if err != nil {
			return 0, ""
		}
		return epoch, h
	}
	eventually(t, "a scheduler leads", func() bool { return a.SchedulerLeading() || b.SchedulerLeading() })
	if a.SchedulerLeading() == b.SchedulerLeading() {
		t.Fatalf("leading: a %v, b %v; want exactly one", a.SchedulerLeading(), b.SchedulerLeading())
	}
	first, _ := holder(a)
	lead, other := a, b
	if b.SchedulerLeading() {
		lead, other = b, a
	}
	lead.Close()
	eventually(t, "the other replica leads", func() bool { return other.SchedulerLeading() })
	if e, _ := holder(other); e <= first {
		t.Fatalf("epoch %d after %d: must grow", e, first)
	}
}
