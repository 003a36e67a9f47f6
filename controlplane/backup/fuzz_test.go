package backup_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/backup"
)

// FuzzRestore: whatever the archive, Restore either refuses it and leaves
// nothing beside the target, or restores exactly the files it lists.
func FuzzRestore(f *testing.F) {
	dir, st, _ := dataDir(f)
	f.Add(create(f, dir, st))
	f.Add([]byte{})
	f.Add([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	f.Fuzz(func(t *testing.T, archive []byte) {
		parent := t.TempDir()
		to := filepath.Join(parent, "r")
		m, err := backup.Restore(bytes.NewReader(archive), to, backup.Limits{MaxBytes: 1 << 20, MaxFiles: 100})
		if err != nil {
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Fatalf("refused (%v) but left %v", err, ents)
			}
			return
		}
		n := 0
		filepath.WalkDir(to, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
		if n != len(m.Files) {
			t.Fatalf("%d files restored, %d listed", n, len(m.Files))
		}
	})
}
