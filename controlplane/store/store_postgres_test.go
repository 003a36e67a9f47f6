package store_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

func openPostgres(t testing.TB, dsn string) *store.Store {
	t.Helper()
	s, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// TestPostgres runs the behavioural suite on PostgreSQL, a fresh database
// per subtest.
func TestPostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		s := openPostgres(t, pgtest.Database(t))
		if s.Backend() != "postgres" {
			t.Fatalf("backend %q", s.Backend())
		}
		return s
	})
}

// TestPostgresConcurrentMigrate: several replicas starting at once on an
// empty database migrate it once, each to the same version.
func TestPostgresConcurrentMigrate(t *testing.T) {
	dsn := pgtest.Database(t)
	const replicas = 4
	var wg sync.WaitGroup
	stores := make([]*store.Store, replicas)
	errs := make([]error, replicas)
	for i := range replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stores[i], errs[i] = store.OpenPostgres(context.Background(), dsn)
		}()
	}
	wg.Wait()
	want := -1
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("replica %d: %v", i, errs[i])
		}
		defer s.Close()
		v, err := s.SchemaVersion(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if want == -1 {
			want = v
		}
		if v != want || v == 0 {
			t.Fatalf("replica %d at schema version %d, want %d (> 0)", i, v, want)
		}
	}
}

// TestPostgresBadDSN: an unparsable DSN is ErrInvalid, and a password in
// it is not echoed.
func TestPostgresBadDSN(t *testing.T) {
	_, err := store.OpenPostgres(context.Background(), "postgres://u:s3cret@[::1")
	if !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("err %v, want ErrInvalid", err)
	}
	if err != nil && contains(err.Error(), "s3cret") {
		t.Fatalf("error echoes the password: %v", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
