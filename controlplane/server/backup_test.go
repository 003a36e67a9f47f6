package server_test

import (
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// TestBackupRestore: a running server with a device that has release 1
// staged is backed up; the server is replaced by one restored from the
// archive into a fresh folder (same addresses). The device reconnects with
// its credentials, the restored server knows it and what it runs, and the
// device stages nothing again: no chunk fetched, its staging untouched.
func TestBackupRestore(t *testing.T) { testBackupRestore(t, nil) }

// TestBackupRestorePostgres is TestBackupRestore on PostgreSQL, backed up
// as the operator guide says: the archive of the data folder (keys, CA)
// and, at the same time, pg_dump of the database (devices, assignments,
// bundles, release metadata), restored with pg_restore into a fresh
// database the restored server then runs on.
func TestBackupRestorePostgres(t *testing.T) {
	for _, tool := range []string{"pg_dump", "pg_restore"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make deps installs PostgreSQL's client tools): %v", tool, err)
		}
	}
	testBackupRestore(t, &pgBackup{from: pgtest.Database(t), to: pgtest.Database(t)})
}

// pgBackup moves a PostgreSQL database from one DSN to another with the
// tools an operator uses.
type pgBackup struct{ from, to, dump string }

func (p *pgBackup) backup(t *testing.T) {
	t.Helper()
	p.dump = filepath.Join(t.TempDir(), "flotilla.pgdump")
	if out, err := exec.Command("pg_dump", "--format=custom", "--file="+p.dump, "--dbname="+p.from).CombinedOutput(); err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
}

func (p *pgBackup) restore(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("pg_restore", "--no-owner", "--exit-on-error", "--dbname="+p.to, p.dump).CombinedOutput(); err != nil {
		t.Fatalf("pg_restore: %v\n%s", err, out)
	}
}

func testBackupRestore(t *testing.T, pg *pgBackup) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	api, mqtt := freeAddr(t), freeAddr(t)
	start := func(dir, database string) *server.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := server.New(ctx, server.Config{DataDir: dir, Database: database, Listen: api, MQTTListen: mqtt, Version: "test",
			WaveDelay: 300 * time.Millisecond, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	var db1, db2 string
	snapshot, wantDB := (func(context.Context, string) error)(nil), "sqlite"
	if pg != nil {
		db1, db2 = pg.from, pg.to
		wantDB = "not included: back the PostgreSQL database up with pg_dump"
	}
	srv := start(dir, db1)
	if pg == nil {
		snapshot = srv.Store().BackupTo
	}
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", nil), "1")
	dev := startAgent(t, op, "dev-1")
	op.run("devices", "label", "dev-1", "site=north")
	op.run("devices", "assign", "dev-1", "digits", "1")
	eventually(t, "release 1 staged", func() bool { return dev.staged(t)["digits"].Release == 1 })
	staged := dev.staged(t)["digits"]
	chunks := dev.chunks(t)
	rev := dev.a.Status().DesiredRevision

	var archive bytes.Buffer
	m, err := backup.Create(context.Background(), &archive, dir, backup.Options{Version: "test", SnapshotDB: snapshot})
	if err != nil {
		t.Fatal(err)
	}
	if m.Database != wantDB {
		t.Fatalf("backup database %q, want %q", m.Database, wantDB)
	}
	if pg != nil {
		pg.backup(t) // beside the live server, as the guide says
	}
	srv.Close()
	eventually(t, "agent sees the server gone", func() bool { return dev.a.Status().State != agent.StateConnected })

	dir2 := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(bytes.NewReader(archive.Bytes()), dir2, backup.Limits{}); err != nil {
		t.Fatal(err)
	}
	if pg != nil {
		pg.restore(t)
	}
	srv2 := start(dir2, db2)
	if srv2.AdminToken() != "" {
		t.Fatal("the restored server made a new admin token: its tokens were not restored")
	}
	op2 := operator{t: t, srv: srv2, token: op.token, keys: keys, dir: dir2}
	out := op2.run("devices", "show", "dev-1")
	if !strings.Contains(out, "site=north") && !strings.Contains(out, `"site": "north"`) {
		t.Fatalf("device on the restored server:\n%s", out)
	}
	if got := srv2.AssignedRelease("dev-1", "digits"); got != 1 {
		t.Fatalf("restored assignment of digits to dev-1: release %d, want 1", got)
	}
	deadline := time.Now().Add(60 * time.Second)
	for dev.a.Status().State != agent.StateConnected {
		if time.Now().After(deadline) {
			t.Fatal("the device did not reconnect to the restored server within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	eventually(t, "restored server has the device's report", func() bool {
		ms := srv2.ReportedModels("dev-1")
		return len(ms) == 1 && ms[0].GetStagedRelease() == 1 && ms[0].GetStagedDigest() == staged.Digest
	})
	eventually(t, "desired state received again", func() bool { return dev.a.Status().DesiredRevision > rev })
	if got := dev.staged(t)["digits"]; got != staged {
		t.Fatalf("staging after the restore %+v, was %+v", got, staged)
	}
	if n := dev.chunksAddedSince(t, chunks); n != 0 {
		t.Fatalf("%d chunks fetched after the restore", n)
	}
}
