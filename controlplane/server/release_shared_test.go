package server

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// TestReleaseMetadataAcrossReplicas: two replicas' release repositories
// on one PostgreSQL database. A replica without the director key, or with
// another online key, refuses to start; one pushes and the other serves
// the same bytes; the leader's refreshes continue one sequence of
// timestamp versions across a change of leader, and the old leader's
// fenced write after the change is refused and changes nothing. A data
// folder from before (metadata in files) is imported on a fresh database.
func TestReleaseMetadataAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	st := openPG(t, pgtest.Database(t))
	clock := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	now := func() time.Time { return clock }
	exp := release.Expiry{Root: 365 * 24 * time.Hour, Targets: 30 * 24 * time.Hour, Snapshot: 7 * 24 * time.Hour, Timestamp: time.Hour}
	gen := func(role string) *release.Key {
		k, err := release.GenerateKey(role)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	online := gen(release.RoleOnline)
	dirA, dirB := filepath.Join(t.TempDir(), "release"), filepath.Join(t.TempDir(), "release")
	for _, d := range []string{dirA, dirB} {
		if _, err := release.WriteKey(d, online); err != nil {
			t.Fatal(err)
		}
	}
	a, err := openTrust(ctx, dirA, "", now, exp, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openTrust(ctx, dirB, "", now, exp, st); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("a replica without the director key: %v, want ErrKeyMismatch", err)
	}
	copyKeys(t, filepath.Join(dirA, "director"), filepath.Join(dirB, "director"))
	b, err := openTrust(ctx, dirB, "", now, exp, st)
	if err != nil {
		t.Fatal(err)
	}
	if _, ra := a.Roots(); string(ra) != string(b.director.Root()) {
		t.Fatal("the replicas' director roots differ")
	}

	repo, err := release.Init(release.RootKeys{Root: []*release.Key{gen(release.RoleRoot)}, Targets: []*release.Key{gen(release.RoleTargets)},
		Online: online, Threshold: 1}, clock, exp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, map[string][]byte{release.RootFile(1): repo.Roots[0], release.FileTargets: repo.Targets}); err != nil {
		t.Fatal(err)
	}
	tsVersion := func(tr *trustRepos) int64 {
		t.Helper()
		ts, err := metadata.Timestamp().FromBytes(tr.Metadata()[release.FileTimestamp])
		if err != nil {
			t.Fatal(err)
		}
		return ts.Signed.Version
	}
	same := func(what string) {
		t.Helper()
		if _, err := b.sync(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := a.sync(ctx); err != nil {
			t.Fatal(err)
		}
		ma, mb := a.Metadata(), b.Metadata()
		if len(ma) == 0 || len(ma) != len(mb) {
			t.Fatalf("%s: a serves %d files, b %d", what, len(ma), len(mb))
		}
		for name, x := range ma {
			if string(mb[name]) != string(x) {
				t.Fatalf("%s: the replicas serve different %s", what, name)
			}
		}
	}
	same("after a's push")
	if v := tsVersion(b); v != 1 {
		t.Fatalf("timestamp v%d after the first push", v)
	}

	// A replica whose online key is not the root's refuses to start.
	dirC := filepath.Join(t.TempDir(), "release")
	copyKeys(t, filepath.Join(dirA, "director"), filepath.Join(dirC, "director"))
	if _, err := release.WriteKey(dirC, gen(release.RoleOnline)); err != nil {
		t.Fatal(err)
	}
	if _, err := openTrust(ctx, dirC, "", now, exp, st); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("a replica with another online key: %v, want ErrKeyMismatch", err)
	}

	l1, err := st.TryLease(ctx, schedulerLease, "a")
	if err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(40 * time.Minute) // past half the timestamp's life
	if _, err := b.Refresh(ctx, schedulerLease, l1.Epoch+1); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("refresh under an epoch not taken: %v, want ErrFenced", err)
	}
	if changed, err := a.Refresh(ctx, schedulerLease, l1.Epoch); err != nil || !changed {
		t.Fatalf("the leader's refresh: %v, %v", changed, err)
	}
	same("after a's refresh")
	if v := tsVersion(b); v != 2 {
		t.Fatalf("b serves timestamp v%d after a's refresh, want 2", v)
	}

	// A stalls; b takes the lease; a's late write is refused.
	if err := l1.Release(); err != nil {
		t.Fatal(err)
	}
	l2, err := st.TryLease(ctx, schedulerLease, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	clock = clock.Add(40 * time.Minute)
	if _, err := a.Refresh(ctx, schedulerLease, l1.Epoch); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("the old leader's refresh: %v, want ErrFenced", err)
	}
	if g, _ := st.ReleaseGeneration(ctx, repoRelease); g != b.Generation() {
		t.Fatalf("the refused write moved the generation to %d", g)
	}
	if changed, err := b.Refresh(ctx, schedulerLease, l2.Epoch); err != nil || !changed {
		t.Fatalf("the new leader's refresh: %v, %v", changed, err)
	}
	same("after b's refresh")
	if v := tsVersion(a); v != 3 {
		t.Fatalf("timestamp v%d after the new leader's refresh, want 3 (the sequence continued)", v)
	}
	// Within the timestamp's half life nothing is signed again.
	if changed, err := b.Refresh(ctx, schedulerLease, l2.Epoch); err != nil || changed {
		t.Fatalf("a refresh with nothing due: %v, %v", changed, err)
	}

	// A data folder from before: its metadata in files, a fresh database.
	legacy := filepath.Join(t.TempDir(), "release")
	copyTree(t, dirA, legacy)
	st2 := openPG(t, pgtest.Database(t))
	l, err := openTrust(ctx, legacy, "", now, exp, st2)
	if err != nil {
		t.Fatal(err)
	}
	if string(l.Metadata()[release.FileTimestamp]) != string(a.Metadata()[release.FileTimestamp]) {
		t.Fatal("the imported repository differs from the folder's")
	}
	if _, dr := l.Roots(); string(dr) != string(a.director.Root()) {
		t.Fatal("the imported director root differs from the folder's")
	}
	if files, _, err := st2.ReleaseFiles(ctx, repoDirector); err != nil || len(files) != 1 {
		t.Fatalf("director files in the database: %d, %v", len(files), err)
	}
}

func openPG(t *testing.T, dsn string) *store.Store {
	t.Helper()
	st, err := store.OpenPostgres(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// copyKeys gives folder to the key files (*.pem) of from, as an operator
// gives each replica the same keys.
func copyKeys(t *testing.T, from, to string) {
	t.Helper()
	pems, _ := filepath.Glob(filepath.Join(from, "*.pem"))
	if len(pems) == 0 {
		t.Fatalf("no keys in %s", from)
	}
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, p := range pems {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, filepath.Base(p)), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if err := os.CopyFS(to, os.DirFS(from)); err != nil {
		t.Fatal(err)
	}
}
