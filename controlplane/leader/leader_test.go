package leader_test

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/leader"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

const job = "rollout-scheduler"

// event is a replica starting or stopping to lead.
type event struct {
	replica string
	epoch   uint64
	start   bool
}

// replica is one control plane: its own store (pool) on the shared
// database, running the election.
type replica struct {
	name   string
	store  *store.Store
	cancel context.CancelFunc
	done   chan struct{}
}

func startReplica(t *testing.T, dsn, name string, events chan<- event) *replica {
	t.Helper()
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{name: name, store: st, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		leader.Run(ctx, st, leader.Config{Name: job, Holder: name, Retry: 50 * time.Millisecond, Check: 50 * time.Millisecond},
			func(ctx context.Context, epoch uint64) {
				events <- event{name, epoch, true}
				<-ctx.Done()
				events <- event{name, epoch, false}
			})
	}()
	t.Cleanup(func() { r.stop(); st.Close() })
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

func next(t *testing.T, events <-chan event) event {
	t.Helper()
	select {
	case e := <-events:
		return e
	case <-time.After(30 * time.Second):
		t.Fatal("no leadership change within 30 s")
		return event{}
	}
}

// TestHandover on PostgreSQL: one replica leads; when its lock connection
// is killed (as a crash or a partition ends it) it stops leading and the
// other takes over with a higher epoch; the old epoch's writes are fenced.
// When the new leader shuts down, the first leads again.
func TestHandover(t *testing.T) {
	dsn := pgtest.Database(t)
	events := make(chan event, 16)
	a := startReplica(t, dsn, "a", events)
	first := next(t, events)
	if first.replica != "a" || !first.start {
		t.Fatalf("first event %+v, want a starting", first)
	}
	b := startReplica(t, dsn, "b", events)
	// b cannot take the lease while a holds it.
	if _, err := b.store.TryLease(context.Background(), job, "probe"); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("lease taken while a holds it: %v", err)
	}

	// Kill a's lock connection from outside, as the database does when
	// a replica dies.
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	res, err := admin.Exec(`SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("terminated %d lock holders, want 1", n)
	}
	var aStopped, bStarted *event
	for aStopped == nil || bStarted == nil {
		e := next(t, events)
		switch {
		case e.replica == "a" && !e.start:
			aStopped = &e
		case e.replica == "b" && e.start:
			bStarted = &e
		default:
			t.Fatalf("unexpected %+v", e)
		}
	}
	if aStopped.epoch != first.epoch || bStarted.epoch <= first.epoch {
		t.Fatalf("a stopped at epoch %d (led %d), b started at %d: want b's above a's", aStopped.epoch, first.epoch, bStarted.epoch)
	}
	nop := func(*sql.Tx) error { return nil }
	if err := a.store.FencedTx(context.Background(), job, first.epoch, nop); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("the old leader's write: %v, want ErrFenced", err)
	}
	if err := b.store.FencedTx(context.Background(), job, bStarted.epoch, nop); err != nil {
		t.Fatalf("the new leader's write: %v", err)
	}

	b.stop() // a graceful shutdown releases the lease
	var again *event
	for again == nil {
		e := next(t, events)
		if e.replica == "a" && e.start {
			again = &e
		} else if e.replica != "b" || e.start {
			t.Fatalf("unexpected %+v", e)
		}
	}
	if again.epoch <= bStarted.epoch {
		t.Fatalf("a leads again at epoch %d, not above b's %d", again.epoch, bStarted.epoch)
	}
	if _, holder, _, err := a.store.LeaseHolder(context.Background(), job); err != nil || holder != "a" {
		t.Fatalf("holder %q, %v", holder, err)
	}
}

// TestLeadReturningGivesUp: a job that returns by itself gives the lease
// up and is started again under a new epoch (SQLite: one process).
func TestLeadReturningGivesUp(t *testing.T) {
	st, err := store.OpenSQLite(context.Background(), t.TempDir()+"/db.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	var epochs []uint64
	done := make(chan struct{})
	go func() {
		defer close(done)
		leader.Run(ctx, st, leader.Config{Name: job, Retry: time.Millisecond, Check: time.Hour}, func(_ context.Context, epoch uint64) {
			mu.Lock()
			epochs = append(epochs, epoch)
			if len(epochs) == 3 {
				cancel()
			}
			mu.Unlock()
		})
	}()
	<-done
	if len(epochs) < 3 || epochs[0] >= epochs[1] || epochs[1] >= epochs[2] {
		t.Fatalf("epochs %v: want three, growing", epochs)
	}
	if _, err := st.TryLease(context.Background(), job, "after"); err != nil {
		t.Fatalf("lease after Run returned: %v (not released)", err)
	}
}
