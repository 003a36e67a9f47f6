// Package backup writes and restores a control plane's state as one
// archive: a consistent copy of the SQLite database and every file of the
// data folder that matters — the CA (pki/), the release repository's and
// the director's keys (release/; their signed metadata is in the
// database, with a copy there), and the uploaded bundles (bundles/; on
// PostgreSQL they are in the database, which pg_dump backs up). The
// director and online keys live in release/, so a restored server signs
// what devices already trust and no device re-rolls.
//
// The archive is a gzip'd tar whose first entry, backup.json, lists every
// other entry with its size and SHA-256. Restore treats the archive as
// hostile: it writes into a fresh folder beside the target and renames it
// into place only when every entry was a plain file under a clean relative
// path, within the size limits, and matched the listing — so a bad archive
// leaves nothing behind. A server on PostgreSQL backs its database up with
// PostgreSQL's tools; its archive holds the files alone and says so.
package backup

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Format is the archive format this package writes and reads.
const Format = 1

// ManifestName is the archive's first entry.
const ManifestName = "backup.json"

// DatabaseName is the SQLite database's name, in the data folder and in
// the archive.
const DatabaseName = "flotilla.db"

// Errors callers branch on with errors.Is.
var (
	ErrBadArchive = errors.New("not a valid backup archive")
	ErrNotEmpty   = errors.New("restore target is not empty")
)

// Manifest is backup.json.
type Manifest struct {
	Format    int       `json:"format"`
	CreatedAt time.Time `json:"created_at"`
	Version   string    `json:"server_version"`
	// Database is "sqlite" (the copy is flotilla.db in the archive) or a
	// note that it is not included.
	Database string  `json:"database"`
	Files    []Entry `json:"files"`
}

// Entry is one file of the archive.
type Entry struct {
	Path   string `json:"path"` // slash-separated, relative
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// skipped are data-folder entries never archived: the live database (its
// consistent copy is taken instead), SQLite's side files, and the admin
// token (a secret the store holds hashed; the operator has it).
func skipped(rel string) bool {
	base := path.Base(rel)
	switch {
	case rel == DatabaseName, strings.HasPrefix(rel, DatabaseName+"-"):
		return true
	case rel == "admin-token":
		return true
	case strings.HasPrefix(base, ".tmp"), strings.HasSuffix(base, ".tmp"):
		return true
	}
	return false
}

// Options for Create.
type Options struct {
	Version string // the server's version, recorded
	// SnapshotDB writes a consistent copy of the SQLite database to the
	// path given (store.Store.BackupTo); nil when the database is not in
	// the data folder (PostgreSQL).
	SnapshotDB func(ctx context.Context, path string) error
	Now        func() time.Time
}

// Create writes the archive of dataDir to w.
func Create(ctx context.Context, w io.Writer, dataDir string, o Options) (*Manifest, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	m := &Manifest{Format: Format, CreatedAt: now().UTC(), Version: o.Version,
		Database: "not included: back the PostgreSQL database up with pg_dump"}
	type source struct{ rel, abs string }
	var srcs []source
	if o.SnapshotDB != nil {
		tmp, err := os.MkdirTemp(dataDir, ".tmp-backup-")
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		defer os.RemoveAll(tmp)
		db := filepath.Join(tmp, DatabaseName)
		if err := o.SnapshotDB(ctx, db); err != nil {
			return nil, fmt.Errorf("backup: database: %w", err)
		}
		srcs = append(srcs, source{DatabaseName, db})
		m.Database = "sqlite"
	}
	err := filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dataDir, p)
		if err != nil || rel == "." {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".tmp") {
				return filepath.SkipDir
			}
			return nil
		}
		if skipped(rel) || !d.Type().IsRegular() {
			return nil // sockets, links and the like are not state
		}
		srcs = append(srcs, source{rel, p})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	sort.Slice(srcs, func(i, j int) bool { return srcs[i].rel < srcs[j].rel })

	// Hash first (the listing leads the archive), then stream. A file
	// that changed in between fails the backup rather than mislead it.
	for _, s := range srcs {
		e, err := hashFile(s.abs)
		if err != nil {
			return nil, fmt.Errorf("backup: %w", err)
		}
		e.Path = s.rel
		m.Files = append(m.Files, e)
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	listing, _ := json.MarshalIndent(m, "", "  ")
	if err := writeEntry(tw, ManifestName, listing, m.CreatedAt); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	for i, s := range srcs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := copyFile(tw, s.abs, m.Files[i], m.CreatedAt); err != nil {
			return nil, fmt.Errorf("backup: %s: %w", s.rel, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return m, nil
}

func hashFile(p string) (Entry, error) {
	f, err := os.Open(p)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return Entry{}, err
	}
	return Entry{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func writeEntry(tw *tar.Writer, name string, b []byte, at time.Time) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: int64(len(b)), ModTime: at, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err := tw.Write(b)
	return err
}

func copyFile(tw *tar.Writer, p string, e Entry, at time.Time) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: e.Path, Mode: 0o600, Size: e.Size, ModTime: at, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, e.Size))
	if err != nil {
		return err
	}
	if n != e.Size || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return errors.New("changed while it was backed up; run the backup again")
	}
	return nil
}
