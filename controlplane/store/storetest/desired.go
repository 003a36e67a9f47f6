package storetest

import (
	"context"
	"sync"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testDesiredRevision(t *testing.T, s *store.Store) {
	ctx := context.Background()
	devs := Enrol(t, s, 2, nil)
	a, b := devs[0].ID, devs[1].ID
	var wg sync.WaitGroup
	revs := make(chan uint64, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.NextDesiredRevision(ctx, a)
			if err != nil {
				t.Error(err)
				return
			}
			revs <- r
		}()
	}
	wg.Wait()
	close(revs)
	seen := map[uint64]bool{}
	for r := range revs {
		if seen[r] || r < 1 || r > 40 {
			t.Fatalf("revision %d repeated or out of 1..40", r)
		}
		seen[r] = true
	}
	if r, err := s.NextDesiredRevision(ctx, b); err != nil || r != 1 {
		t.Fatalf("other device: revision %d, %v; want 1 (revisions are per device)", r, err)
	}
	wantErr(t, func() error { _, err := s.NextDesiredRevision(ctx, "nobody"); return err }(), store.ErrNotFound)
	_, err := s.Decommission(ctx, a, now)
	must(t, err)
	wantErr(t, func() error { _, err := s.NextDesiredRevision(ctx, a); return err }(), store.ErrNotFound)
}

func testEnrolTokenByHash(t *testing.T, s *store.Store) {
	ctx := context.Background()
	want := CreateToken(t, s, "tok", 2, map[string]string{"site": "lab"})
	got, err := s.EnrolTokenByHash(ctx, want.Hash)
	must(t, err)
	if got.ID != "tok" || got.MaxUses != 2 || got.Labels["site"] != "lab" {
		t.Fatalf("got %+v", got)
	}
	must(t, s.RevokeEnrolToken(ctx, "tok", now))
	if got, err = s.EnrolTokenByHash(ctx, want.Hash); err != nil || got.RevokedAt != now {
		t.Fatalf("revoked token: %+v, %v (revoked tokens are returned, marked)", got, err)
	}
	_, err = s.EnrolTokenByHash(ctx, Hash("unknown"))
	wantErr(t, err, store.ErrNotFound)
}

func testMarkAllOffline(t *testing.T, s *store.Store) {
	ctx := context.Background()
	devs := Enrol(t, s, 3, nil)
	for _, d := range devs[:2] {
		if _, err := s.SetStatus(ctx, d.ID, true, now+1); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.MarkAllOffline(ctx, now+2)
	must(t, err)
	if n != 2 {
		t.Fatalf("changed %d devices, want 2", n)
	}
	for _, d := range devs {
		if got := mustDevice(t, s, d.ID); got.Online {
			t.Fatalf("%s still online", d.ID)
		}
	}
	// A status older than the restart is ignored; a newer one applies.
	if changed, err := s.SetStatus(ctx, devs[0].ID, true, now+1); err != nil || changed {
		t.Fatalf("stale online applied: %v, %v", changed, err)
	}
	if changed, err := s.SetStatus(ctx, devs[0].ID, true, now+3); err != nil || !changed {
		t.Fatalf("fresh online: %v, %v", changed, err)
	}
}
