package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestOpenMigratesAndKeepsEpoch(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	epoch := db.Epoch()
	if len(epoch) != 32 {
		t.Errorf("epoch %q", epoch)
	}
	migs, err := loadMigrations(migrationFiles, "migrations")
	if err != nil {
		t.Fatal(err)
	}
	if v, err := db.SchemaVersion(ctx); err != nil || v != len(migs) || v < 2 {
		t.Errorf("schema version %d (want %d), %v", v, len(migs), err)
	}
	db.Close()
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("data folder mode %v, %v", fi.Mode(), err)
	}

	db, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.Epoch() != epoch {
		t.Errorf("epoch changed on reopen: %q → %q", epoch, db.Epoch())
	}
}

func TestRefusesNewerSchema(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.db.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (99, 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, dir); !errors.Is(err, ErrSchemaTooNew) {
		t.Errorf("Open = %v, want ErrSchemaTooNew", err)
	}
}

func TestIdentity(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Identity(ctx); !errors.Is(err, ErrNotEnrolled) {
		t.Fatalf("Identity = %v, want ErrNotEnrolled", err)
	}
	want := Identity{DeviceID: "dev-1", MQTTURL: "mqtts://h:8883", MQTTUsername: "dev-1", MQTTPassword: "s3cret",
		TopicPrefix: "flotilla/v1", CAPEM: []byte("ca"), EnrolledAt: time.UnixMilli(1234)}
	if err := db.SaveIdentity(ctx, want); err != nil {
		t.Fatal(err)
	}
	got, err := db.Identity(ctx)
	if err != nil || got.DeviceID != want.DeviceID || got.MQTTPassword != want.MQTTPassword ||
		string(got.CAPEM) != "ca" || got.CertPEM != nil || !got.EnrolledAt.Equal(want.EnrolledAt) {
		t.Errorf("Identity = %+v, %v", got, err)
	}
	if s := got.String(); strings.Contains(s, "s3cret") {
		t.Errorf("String() shows the password: %s", s)
	}
}

func TestAcceptDesiredOnlyForward(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	for _, step := range []struct {
		rev    uint64
		stored bool
		want   uint64
	}{{3, true, 3}, {2, false, 3}, {3, false, 3}, {4, true, 4}} {
		ok, err := db.AcceptDesired(ctx, step.rev, []byte{byte(step.rev)}, now)
		if err != nil || ok != step.stored {
			t.Fatalf("AcceptDesired(%d) = %v, %v", step.rev, ok, err)
		}
		rev, raw, err := db.Desired(ctx)
		if err != nil || rev != step.want || raw[0] != byte(step.want) {
			t.Fatalf("after %d: Desired = %d, %v, %v", step.rev, rev, raw, err)
		}
	}
	if _, err := db.AcceptDesired(ctx, 0, nil, now); err == nil {
		t.Error("revision 0 accepted")
	}
}

func TestJournalKeepsNewest(t *testing.T) {
	ctx := context.Background()
	db, err := Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for i := range journalKeep + 5 {
		if err := db.Record(ctx, Event{At: time.UnixMilli(int64(i)), Level: "info", Code: "test", Message: "m"}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := db.Recent(ctx, 2*journalKeep)
	if err != nil || len(all) != journalKeep || all[0].At.UnixMilli() != journalKeep+4 {
		t.Errorf("Recent = %d events (newest %v), %v", len(all), all[0].At, err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, %v", fi.Mode(), err)
	}
	k2, err := LoadOrCreateKey(dir)
	if err != nil || !k1.Equal(k2) {
		t.Errorf("reloaded key differs: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFile), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(dir); err == nil {
		t.Error("a corrupt key file was accepted")
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
