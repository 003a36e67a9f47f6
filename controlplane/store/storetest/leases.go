package storetest

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// testLeases: one holder at a time; each new lease raises the epoch; a
// write fenced with an old epoch fails with ErrFenced and writes nothing.
func testLeases(t *testing.T, s *store.Store) {
	ctx := context.Background()
	if _, _, _, err := s.LeaseHolder(ctx, "scheduler"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("holder of a lease never taken: %v, want ErrNotFound", err)
	}
	if err := s.FencedTx(ctx, "scheduler", 1, func(*sql.Tx) error { return nil }); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("write under a lease never taken: %v, want ErrFenced", err)
	}
	l1, err := s.TryLease(ctx, "scheduler", "replica-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.TryLease(ctx, "scheduler", "replica-b"); !errors.Is(err, store.ErrNotLeader) {
		t.Fatalf("second lease while held: %v, want ErrNotLeader", err)
	}
	other, err := s.TryLease(ctx, "another-job", "replica-b")
	if err != nil {
		t.Fatalf("a lease of another name: %v", err)
	}
	defer other.Release()
	if epoch, holder, _, err := s.LeaseHolder(ctx, "scheduler"); err != nil || epoch != l1.Epoch || holder != "replica-a" {
		t.Fatalf("holder %q epoch %d (%v), want replica-a %d", holder, epoch, err, l1.Epoch)
	}
	if err := l1.Check(ctx); err != nil {
		t.Fatal(err)
	}
	wrote := 0
	write := func(tx *sql.Tx) error { wrote++; return nil }
	if err := s.FencedTx(ctx, "scheduler", l1.Epoch, write); err != nil || wrote != 1 {
		t.Fatalf("fenced write by the leader: %v (ran %d)", err, wrote)
	}
	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l1.Release(); err != nil { // twice: nothing
		t.Fatal(err)
	}
	l2, err := s.TryLease(ctx, "scheduler", "replica-b")
	if err != nil {
		t.Fatalf("lease after release: %v", err)
	}
	defer l2.Release()
	if l2.Epoch <= l1.Epoch {
		t.Fatalf("epoch %d after %d: must grow", l2.Epoch, l1.Epoch)
	}
	if err := s.FencedTx(ctx, "scheduler", l1.Epoch, write); !errors.Is(err, store.ErrFenced) || wrote != 1 {
		t.Fatalf("write under the old epoch: %v (ran %d), want ErrFenced and nothing run", err, wrote)
	}
	// fn's error rolls back and is returned as it is.
	boom := errors.New("boom")
	if err := s.FencedTx(ctx, "scheduler", l2.Epoch, func(*sql.Tx) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("fn's error: %v", err)
	}
	if _, err := s.TryLease(ctx, "", "x"); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("empty lease name: %v, want ErrInvalid", err)
	}
}
