package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

func openSQLite(t testing.TB, path string) *store.Store {
	t.Helper()
	s, err := store.OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

func TestSQLite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) *store.Store {
		return openSQLite(t, filepath.Join(t.TempDir(), "db.sqlite"))
	})
}

func TestSQLiteReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "data", "nested", "db.sqlite")
	s := openSQLite(t, path)
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("data folder: %v, %v; want mode 0700", fi.Mode(), err)
	}
	devices := storetest.Enrol(t, s, 3, func(i int) map[string]string { return map[string]string{"n": fmt.Sprint(i)} })
	if _, err := s.AppendAudit(ctx, store.AuditEntry{At: 1, Actor: "a", Action: "enrol"}); err != nil {
		t.Fatal(err)
	}
	version, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openSQLite(t, path) // migrations run again: a no-op
	defer s.Close()
	if v, err := s.SchemaVersion(ctx); err != nil || v != version {
		t.Fatalf("schema version %d, %v after reopen; want %d", v, err, version)
	}
	got, err := s.ListDevices(ctx, store.ListOptions{Selector: map[string]string{"n": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], devices[1]) {
		t.Fatalf("after reopen got %+v, want %+v", got, devices[1])
	}
	if audit, err := s.ListAudit(ctx, 0, 0); err != nil || len(audit) != 1 {
		t.Fatalf("audit after reopen: %v, %v", audit, err)
	}
}

func TestSQLiteRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "db.sqlite")
	s := openSQLite(t, path)
	version, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// A newer release migrated this database.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations (version, applied_at_ms) VALUES (?, 0)`, version+1); err != nil {
		t.Fatal(err)
	}
	db.Close()

	_, err = store.OpenSQLite(ctx, path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open: got %v, want ErrSchemaTooNew", err)
	}
	t.Logf("refused with: %v", err)
}

func TestSQLiteBadPath(t *testing.T) {
	for _, p := range []string{"", "db.sqlite?mode=memory"} {
		if _, err := store.OpenSQLite(context.Background(), p); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("open %q: got %v, want ErrInvalid", p, err)
		}
	}
}

// benchStore returns a store holding n enrolled devices dev-000….
func benchStore(b *testing.B, n int) *store.Store {
	s := openSQLite(b, filepath.Join(b.TempDir(), "db.sqlite"))
	b.Cleanup(func() { s.Close() })
	storetest.Enrol(b, s, n, nil)
	return s
}

// BenchmarkDeviceCredential is the broker's lookup on every MQTT connect.
func BenchmarkDeviceCredential(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, 1000)
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, _, err := s.DeviceCredential(ctx, fmt.Sprintf("dev-%03d", i%1000)); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				if _, _, err := s.DeviceCredential(ctx, fmt.Sprintf("dev-%03d", i%1000)); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
}

// BenchmarkTouch is a heartbeat: each call moves LastSeen forward.
func BenchmarkTouch(b *testing.B) {
	ctx := context.Background()
	s := benchStore(b, 1000)
	at := int64(2_000_000_000_000)
	b.Run("serial", func(b *testing.B) {
		i := 0
		for b.Loop() {
			at++
			if err := s.Touch(ctx, fmt.Sprintf("dev-%03d", i%1000), at); err != nil {
				b.Fatal(err)
			}
			i++
		}
	})
	b.Run("unchanged", func(b *testing.B) { // LastSeen already newer: no write
		for b.Loop() {
			if err := s.Touch(ctx, "dev-001", 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
