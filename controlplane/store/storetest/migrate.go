package storetest

import (
	"context"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// The backends test what needs a database that outlives a store: reopening,
// and the refusal of a schema newer than the binary (store.ErrSchemaTooNew).

func testMigrateIdempotent(t *testing.T, s *store.Store) {
	ctx := context.Background()
	v, err := s.SchemaVersion(ctx)
	must(t, err)
	if v < 1 {
		t.Fatalf("schema version %d after open", v)
	}
	Enrol(t, s, 1, nil)
	for range 2 {
		must(t, s.Migrate(ctx))
	}
	if again, err := s.SchemaVersion(ctx); err != nil || again != v {
		t.Fatalf("schema version %d, %v after migrating again; want %d", again, err, v)
	}
	mustDevice(t, s, "dev-000")
}
