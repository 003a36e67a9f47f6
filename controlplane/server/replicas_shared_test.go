package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// shareKeys gives the replica whose data folder is to the keys of the
// one in from, as an operator gives every replica the same secrets
// (docs/scaling.md): the release repository's online key
// (release/online-*.pem) and the director's (release/director/*.pem).
// Everything else replicas share through the database.
func shareKeys(t *testing.T, from, to string) {
	t.Helper()
	n := 0
	for _, sub := range []string{"release", filepath.Join("release", "director")} {
		pems, _ := filepath.Glob(filepath.Join(from, sub, "*.pem"))
		if err := os.MkdirAll(filepath.Join(to, sub), 0o700); err != nil {
			t.Fatal(err)
		}
		for _, p := range pems {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(to, sub, filepath.Base(p)), b, 0o600); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no keys in %s", from)
	}
}

// TestReplicasShareBundlesMosquitto: two replicas on one PostgreSQL
// database and one Mosquitto, the second given only the first one's keys
// (no copy of its data folder). A bundle uploaded and released through
// replica A is listed as uploaded by replica B; a device enrolled through
// B and assigned through B fetches it from B's wave, which reads the
// chunks from the database; neither replica keeps a folder copy.
func TestReplicasShareBundlesMosquitto(t *testing.T) {
	shared := newSharedServices(t)
	start := func(dir string) *server.Server { t.Helper(); return shared.start(t, shared.config(t, dir)) }
	dirA, dirB := t.TempDir(), t.TempDir()
	keys := operatorKeys(t, dirA)
	a := start(dirA)
	shareKeys(t, dirA, dirB)
	bsrv := start(dirB)

	op := newOperator(t, a, dirA, keys)
	op.release(digitsSource(t, "1", nil), "1")
	for _, dir := range []string{dirA, dirB} {
		if ms, _ := filepath.Glob(filepath.Join(dir, "bundles", "manifests", "*")); len(ms) != 0 {
			t.Fatalf("a replica on PostgreSQL keeps bundles in its folder: %v", ms)
		}
	}
	ctx := context.Background()
	cb := adminClient(t, bsrv, dirA) // the token is in the shared database
	list, err := cb.ListBundles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Bundles) != 1 || !list.Bundles[0].Uploaded || list.Bundles[0].Model != "digits" {
		t.Fatalf("replica B lists %+v; want digits release 1, uploaded", list.Bundles)
	}

	et, err := cb.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "dev-b", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	opB := operator{t: t, srv: bsrv, token: op.token, keys: keys, dir: dirB}
	startRolloutAgent(t, opB, "dev-b", filepath.Join(t.TempDir(), "dev-b"), et.Token)
	if _, err := cb.Assign(ctx, "dev-b", "digits", 1); err != nil {
		t.Fatal(err)
	}
	within(t, time.Minute, "dev-b runs the bundle uploaded to A, sent by B", func() bool {
		m := reportedDigits(bsrv, "dev-b")
		return m != nil && m.GetActiveRelease() == 1
	})
	if wave, _ := bsrv.ChunksSent(); wave == 0 {
		t.Fatal("replica B sent no wave")
	}
}

// TestReleaseRefreshAcrossReplicas: two servers on one PostgreSQL
// database, their clock moved past half the timestamp's life step by
// step. Only the scheduler's leader re-signs; both serve the same
// timestamp; when the leader stops, the other takes the lease and its
// next refresh continues the sequence. No version is ever served with two
// different contents, and none is skipped or repeated.
func TestReleaseRefreshAcrossReplicas(t *testing.T) {
	dsn := pgtest.Database(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	start := func(dir string) *server.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := server.New(ctx, server.Config{DataDir: dir, Database: dsn, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0",
			Version: "test", Now: now, ReleaseRefresh: 50 * time.Millisecond, Logger: testLogger(t),
			Rollouts: server.RolloutConfig{Every: 50 * time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	dirA, dirB := t.TempDir(), t.TempDir()
	keys := operatorKeys(t, dirA)
	a := start(dirA)
	shareKeys(t, dirA, dirB)
	b := start(dirB)
	newOperator(t, a, dirA, keys).run("release", "push", "-keys", keys)

	seen := map[int64]string{} // version → content, from either replica
	check := func(s *server.Server) int64 {
		t.Helper()
		v, raw := s.ReleaseTimestamp()
		if v == 0 {
			return 0
		}
		if prev, ok := seen[v]; ok && prev != string(raw) {
			t.Fatalf("timestamp v%d served with two different contents", v)
		}
		seen[v] = string(raw)
		return v
	}
	both := func(want int64) {
		t.Helper()
		eventually(t, fmt.Sprintf("both replicas serve timestamp v%d", want), func() bool {
			va, vb := check(a), check(b)
			if va > want || vb > want {
				t.Fatalf("timestamp v%d/v%d, want v%d: a version skipped or signed twice", va, vb, want)
			}
			return va == want && vb == want
		})
	}
	both(1)
	eventually(t, "a scheduler leads", func() bool { return a.SchedulerLeading() || b.SchedulerLeading() })
	leader, other := a, b
	if b.SchedulerLeading() {
		leader, other = b, a
	}
	clock.Add(int64(13 * time.Hour)) // past half the default 24 h life
	both(2)
	time.Sleep(300 * time.Millisecond) // several refresh ticks: nothing due, nothing signed
	both(2)

	leader.Close()
	within(t, 30*time.Second, "the other replica leads", func() bool { return other.SchedulerLeading() })
	clock.Add(int64(13 * time.Hour))
	eventually(t, "the new leader serves timestamp v3", func() bool {
		v := check(other)
		if v > 3 {
			t.Fatalf("timestamp v%d after the failover, want v3", v)
		}
		return v == 3
	})
}
