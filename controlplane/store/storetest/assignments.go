package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// testAssignments: set replaces the model's assignment but keeps its
// signing; lists, digests, the repair check and staleness read them back;
// remove withdraws one; bad input changes nothing.
func testAssignments(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := func(dev, model string, rel uint64, digest string) store.Assignment {
		return store.Assignment{DeviceID: dev, Model: model, Release: rel, Target: model + "/" + string(rune('0'+rel)), Digest: digest}
	}
	for _, as := range []store.Assignment{a("d1", "digits", 1, "aa"), a("d1", "mobilenet", 3, "bb"), a("d2", "digits", 1, "aa")} {
		if err := s.SetAssignment(ctx, as); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.MarkAssignmentsSigned(ctx, "d1", 7, now); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAssignment(ctx, a("d1", "digits", 2, "cc")); err != nil { // a new release of digits
		t.Fatal(err)
	}
	got, err := s.DeviceAssignments(ctx, "d1")
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Assignment{
		{DeviceID: "d1", Model: "digits", Release: 2, Target: "digits/2", Digest: "cc", Revision: 7, SignedAt: now},
		{DeviceID: "d1", Model: "mobilenet", Release: 3, Target: "mobilenet/3", Digest: "bb", Revision: 7, SignedAt: now},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("d1's assignments\n%+v\nwant\n%+v", got, want)
	}
	if g, err := s.GetAssignment(ctx, "d2", "digits"); err != nil || g.Release != 1 || g.SignedAt != 0 {
		t.Fatalf("d2 digits: %+v, %v", g, err)
	}
	if _, err := s.GetAssignment(ctx, "d2", "mobilenet"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent assignment: %v, want ErrNotFound", err)
	}
	if ds, err := s.AssignedDigests(ctx); err != nil || !reflect.DeepEqual(ds, []string{"aa", "bb", "cc"}) {
		t.Fatalf("digests %v, %v", ds, err)
	}
	for _, c := range []struct {
		dev, digest string
		want        bool
	}{{"d1", "cc", true}, {"d1", "aa", false}, {"d2", "aa", true}, {"d3", "aa", false}} {
		if ok, err := s.AssignedBundle(ctx, c.dev, c.digest); err != nil || ok != c.want {
			t.Errorf("AssignedBundle(%s, %s) = %v, %v; want %v", c.dev, c.digest, ok, err, c.want)
		}
	}
	if st, err := s.StaleAssignments(ctx, now+1); err != nil || !reflect.DeepEqual(st, []string{"d1"}) {
		t.Fatalf("stale before now+1: %v, %v (d2 was never signed)", st, err)
	}
	if st, err := s.StaleAssignments(ctx, now); err != nil || len(st) != 0 {
		t.Fatalf("stale before now: %v, %v", st, err)
	}
	if had, err := s.RemoveAssignment(ctx, "d1", "mobilenet"); err != nil || !had {
		t.Fatalf("remove: %v, %v", had, err)
	}
	if had, err := s.RemoveAssignment(ctx, "d1", "mobilenet"); err != nil || had {
		t.Fatalf("remove again: %v, %v; want false", had, err)
	}
	if n, err := s.CountAssignments(ctx); err != nil || n != 2 {
		t.Fatalf("count %d, %v; want 2", n, err)
	}
	for _, bad := range []store.Assignment{{}, {DeviceID: "d1", Model: "digits"}, {DeviceID: "d1", Model: "digits", Release: 3, Target: "t"}} {
		if err := s.SetAssignment(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("SetAssignment(%+v): %v, want ErrInvalid", bad, err)
		}
	}
	if g, _ := s.GetAssignment(ctx, "d1", "digits"); g.Release != 2 {
		t.Fatalf("a refused set changed the assignment: %+v", g)
	}
}
