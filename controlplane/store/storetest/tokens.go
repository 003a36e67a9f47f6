package storetest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testEnrolTokens(t *testing.T, s *store.Store) {
	ctx := context.Background()
	a := store.EnrolToken{ID: "a", Hash: Hash("a"), Name: "line 1", MaxUses: 3, ExpiresAt: now + 1000,
		Labels: map[string]string{"site": "lyon"}, CreatedAt: now, Uses: 99, RevokedAt: 5}
	must(t, s.CreateEnrolToken(ctx, a))
	CreateToken(t, s, "b", 0, nil)

	wantErr(t, s.CreateEnrolToken(ctx, store.EnrolToken{ID: "a", Hash: Hash("other"), CreatedAt: now}), store.ErrConflict)
	wantErr(t, s.CreateEnrolToken(ctx, store.EnrolToken{ID: "c", Hash: Hash("a"), CreatedAt: now}), store.ErrConflict)
	for name, bad := range map[string]store.EnrolToken{
		"short hash":    {ID: "d", Hash: []byte("x")},
		"empty id":      {ID: "", Hash: Hash("d")},
		"negative uses": {ID: "d", Hash: Hash("d"), MaxUses: -1},
		"bad labels":    {ID: "d", Hash: Hash("d"), Labels: map[string]string{"a b": "c"}},
	} {
		if err := s.CreateEnrolToken(ctx, bad); !isInvalid(err) {
			t.Errorf("%s: got %v, want ErrInvalid", name, err)
		}
	}

	toks, err := s.ListEnrolTokens(ctx)
	must(t, err)
	a.Uses, a.RevokedAt = 0, 0 // not the caller's to set
	want := []store.EnrolToken{a, {ID: "b", Hash: Hash("b"), Name: "token b", Labels: map[string]string{}, CreatedAt: now}}
	if !reflect.DeepEqual(toks, want) {
		t.Fatalf("tokens\n got %+v\nwant %+v", toks, want)
	}

	must(t, s.RevokeEnrolToken(ctx, "a", now+5))
	must(t, s.RevokeEnrolToken(ctx, "a", now+9)) // idempotent, keeps the first time
	wantErr(t, s.RevokeEnrolToken(ctx, "nope", now), store.ErrNotFound)
	toks, err = s.ListEnrolTokens(ctx)
	must(t, err)
	if toks[0].RevokedAt != now+5 || toks[1].RevokedAt != 0 {
		t.Fatalf("revoked at %d, %d; want %d, 0", toks[0].RevokedAt, toks[1].RevokedAt, now+5)
	}
}

func testAPITokens(t *testing.T, s *store.Store) {
	ctx := context.Background()
	admin := store.APIToken{ID: "t1", Name: "ci", Role: store.RoleAdmin, Hash: Hash("s1"), CreatedAt: now, ExpiresAt: now + 1000}
	viewer := store.APIToken{ID: "t2", Name: "grafana", Role: store.RoleViewer, Hash: Hash("s2"), CreatedAt: now + 1}
	must(t, s.CreateAPIToken(ctx, admin))
	must(t, s.CreateAPIToken(ctx, viewer))
	wantErr(t, s.CreateAPIToken(ctx, store.APIToken{ID: "t1", Role: store.RoleViewer, Hash: Hash("s3")}), store.ErrConflict)
	wantErr(t, s.CreateAPIToken(ctx, store.APIToken{ID: "t3", Role: store.RoleViewer, Hash: Hash("s1")}), store.ErrConflict)
	wantErr(t, s.CreateAPIToken(ctx, store.APIToken{ID: "t4", Role: "root", Hash: Hash("s4")}), store.ErrInvalid)

	got, err := s.APITokenByHash(ctx, Hash("s1"))
	must(t, err)
	if !reflect.DeepEqual(got, admin) {
		t.Fatalf("token\n got %+v\nwant %+v", got, admin)
	}
	if !got.Active(now+999) || got.Active(now+1000) {
		t.Fatal("Active does not honour ExpiresAt")
	}
	_, err = s.APITokenByHash(ctx, Hash("unknown"))
	wantErr(t, err, store.ErrNotFound)

	must(t, s.TouchAPIToken(ctx, "t1", now+50))
	must(t, s.TouchAPIToken(ctx, "t1", now+40)) // older: kept at +50
	wantErr(t, s.TouchAPIToken(ctx, "nope", now), store.ErrNotFound)

	must(t, s.RevokeAPIToken(ctx, "t2", now+60))
	must(t, s.RevokeAPIToken(ctx, "t2", now+70))
	wantErr(t, s.RevokeAPIToken(ctx, "nope", now), store.ErrNotFound)
	got, err = s.APITokenByHash(ctx, Hash("s2"))
	must(t, err)
	if got.RevokedAt != now+60 || got.Active(now+61) {
		t.Fatalf("revoked token: %+v", got)
	}

	toks, err := s.ListAPITokens(ctx)
	must(t, err)
	var list []string
	for _, tok := range toks {
		list = append(list, tok.ID)
	}
	if !slices.Equal(list, []string{"t1", "t2"}) || toks[0].LastUsedAt != now+50 {
		t.Fatalf("tokens %v, last used %d", list, toks[0].LastUsedAt)
	}
}

func isInvalid(err error) bool {
	return errors.Is(err, store.ErrInvalid)
}
