package backup_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
)

// dataDir makes a data folder with a real SQLite store holding two
// devices, and files as the server keeps them.
func dataDir(t testing.TB) (string, *store.Store, []store.Device) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenSQLite(context.Background(), filepath.Join(dir, backup.DatabaseName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	devs := storetest.Enrol(t, st, 2, func(i int) map[string]string { return map[string]string{"site": []string{"n", "s"}[i]} })
	files := map[string]string{
		"pki/ca.pem":                  "ca",
		"pki/ca-key.pem":              "ca key",
		"release/online-1.pem":        "online key",
		"release/assignments.json":    `{"dev-0":{}}`,
		"release/repo/timestamp.json": "{}",
		"bundles/chunks/ab/abcd":      string(bytes.Repeat([]byte{7}, 70_000)),
		"admin-token":                 "secret",
	}
	for p, c := range files {
		full := filepath.Join(dir, p)
		os.MkdirAll(filepath.Dir(full), 0o700)
		if err := os.WriteFile(full, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir, st, devs
}

func create(t testing.TB, dir string, st *store.Store) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := backup.Create(context.Background(), &buf, dir, backup.Options{Version: "test", SnapshotDB: st.BackupTo}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestRoundTrip: a backup of a live store restores into a fresh folder
// with the devices and every file but the admin token and the live
// database's side files.
func TestRoundTrip(t *testing.T) {
	dir, st, devs := dataDir(t)
	archive := create(t, dir, st)
	to := filepath.Join(t.TempDir(), "restored")
	m, err := backup.Restore(bytes.NewReader(archive), to, backup.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Database != "sqlite" || m.Version != "test" {
		t.Fatalf("manifest %+v", m)
	}
	for _, p := range []string{"pki/ca.pem", "pki/ca-key.pem", "release/online-1.pem", "release/assignments.json", "release/repo/timestamp.json", "bundles/chunks/ab/abcd"} {
		a, _ := os.ReadFile(filepath.Join(dir, p))
		b, err := os.ReadFile(filepath.Join(to, p))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("%s restored: %v (equal %v)", p, err, bytes.Equal(a, b))
		}
	}
	if _, err := os.Stat(filepath.Join(to, "admin-token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin token in the backup: %v", err)
	}
	rs, err := store.OpenSQLite(context.Background(), filepath.Join(to, backup.DatabaseName))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	got, err := rs.ListDevices(context.Background(), store.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, devs) {
		t.Fatalf("restored devices\n%+v\nwant\n%+v", got, devs)
	}
}

// rewrite unpacks archive, lets edit change its entries (name → content,
// in order) and its listing, and packs it again.
func rewrite(t *testing.T, archive []byte, edit func(names *[]string, files map[string][]byte, m *backup.Manifest)) []byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var names []string
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		var b bytes.Buffer
		b.ReadFrom(tr)
		names = append(names, h.Name)
		files[h.Name] = b.Bytes()
	}
	var m backup.Manifest
	if err := json.Unmarshal(files[backup.ManifestName], &m); err != nil {
		t.Fatal(err)
	}
	edit(&names, files, &m)
	files[backup.ManifestName], _ = json.Marshal(m)
	var out bytes.Buffer
	gw := gzip.NewWriter(&out)
	tw := tar.NewWriter(gw)
	for _, n := range names {
		typ := byte(tar.TypeReg)
		if n == "link" {
			typ = tar.TypeSymlink
		}
		tw.WriteHeader(&tar.Header{Name: n, Mode: 0o600, Size: int64(len(files[n])), Typeflag: typ, Linkname: "/etc/passwd"})
		tw.Write(files[n])
	}
	tw.Close()
	gw.Close()
	return out.Bytes()
}

// TestRestoreRefusesHostileArchives: each bad archive is refused with
// ErrBadArchive and leaves no folder behind, and nothing outside it.
func TestRestoreRefusesHostileArchives(t *testing.T) {
	dir, st, _ := dataDir(t)
	good := create(t, dir, st)
	cases := map[string][]byte{
		"truncated": good[:len(good)/2],
		"not gzip":  []byte("hello"),
		"empty":     nil,
		"tampered file": rewrite(t, good, func(_ *[]string, f map[string][]byte, _ *backup.Manifest) {
			f["pki/ca.pem"] = []byte("evil")
		}),
		"traversal": rewrite(t, good, func(n *[]string, f map[string][]byte, m *backup.Manifest) {
			*n = append(*n, "../escaped")
			f["../escaped"] = []byte("x")
			m.Files = append(m.Files, backup.Entry{Path: "../escaped", Size: 1, SHA256: "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"})
		}),
		"absolute": rewrite(t, good, func(n *[]string, f map[string][]byte, m *backup.Manifest) {
			*n = append(*n, "/tmp/abs")
			f["/tmp/abs"] = []byte("x")
			m.Files = append(m.Files, backup.Entry{Path: "/tmp/abs", Size: 1, SHA256: "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"})
		}),
		"unlisted entry": rewrite(t, good, func(n *[]string, f map[string][]byte, _ *backup.Manifest) {
			*n = append(*n, "extra")
			f["extra"] = []byte("x")
		}),
		"listed, missing": rewrite(t, good, func(n *[]string, _ map[string][]byte, _ *backup.Manifest) {
			*n = (*n)[:len(*n)-1]
		}),
		"symlink": rewrite(t, good, func(n *[]string, f map[string][]byte, m *backup.Manifest) {
			*n = append(*n, "link")
			f["link"] = nil
			m.Files = append(m.Files, backup.Entry{Path: "link", Size: 0, SHA256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"})
		}),
		"newer format": rewrite(t, good, func(_ *[]string, _ map[string][]byte, m *backup.Manifest) {
			m.Format = 2
		}),
	}
	for name, archive := range cases {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			to := filepath.Join(parent, "restored")
			_, err := backup.Restore(bytes.NewReader(archive), to, backup.Limits{})
			if !errors.Is(err, backup.ErrBadArchive) {
				t.Fatalf("err %v, want ErrBadArchive", err)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("left behind: %v", ents)
			}
		})
	}
	// Limits are enforced before anything is written.
	if _, err := backup.Restore(bytes.NewReader(good), filepath.Join(t.TempDir(), "r"), backup.Limits{MaxBytes: 1000}); !errors.Is(err, backup.ErrBadArchive) {
		t.Fatalf("over MaxBytes: %v", err)
	}
}

// TestRestoreRefusesNonEmptyTarget: an existing, non-empty folder is
// never written into.
func TestRestoreRefusesNonEmptyTarget(t *testing.T) {
	dir, st, _ := dataDir(t)
	good := create(t, dir, st)
	to := t.TempDir()
	os.WriteFile(filepath.Join(to, "keep"), []byte("mine"), 0o600)
	if _, err := backup.Restore(bytes.NewReader(good), to, backup.Limits{}); !errors.Is(err, backup.ErrNotEmpty) {
		t.Fatalf("err %v, want ErrNotEmpty", err)
	}
	if b, _ := os.ReadFile(filepath.Join(to, "keep")); string(b) != "mine" {
		t.Fatal("the target was changed")
	}
}

// TestBackupWithoutDatabase: a PostgreSQL server's backup holds the files
// and says the database is not included.
func TestBackupWithoutDatabase(t *testing.T) {
	dir, _, _ := dataDir(t)
	var buf bytes.Buffer
	m, err := backup.Create(context.Background(), &buf, dir, backup.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range m.Files {
		if e.Path == backup.DatabaseName {
			t.Fatal("the live SQLite file was copied as it is")
		}
	}
	if m.Database == "sqlite" {
		t.Fatalf("database %q", m.Database)
	}
}
