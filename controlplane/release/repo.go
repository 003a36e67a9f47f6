package release

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Metadata file names, as go-tuf names them and as they travel in
// ReleaseMetadata.metadata and DesiredState.director_metadata.
const (
	FileRoot      = "root.json"
	FileTargets   = "targets.json"
	FileSnapshot  = "snapshot.json"
	FileTimestamp = "timestamp.json"
)

// RootFile is the name of root version v: "<v>.root.json".
func RootFile(v int64) string { return strconv.FormatInt(v, 10) + ".root.json" }

// Repository is one TUF repository's signed metadata: every root version
// (Roots[i] is version i+1, so devices can walk rotations) and the current
// targets, snapshot and timestamp (the last two empty until Publish).
type Repository struct {
	Roots     [][]byte
	Targets   []byte
	Snapshot  []byte
	Timestamp []byte
}

// Root parses the newest root.
func (r *Repository) Root() (*metadata.Metadata[metadata.RootType], error) {
	if len(r.Roots) == 0 {
		return nil, errors.New("repository has no root")
	}
	return metadata.Root().FromBytes(r.Roots[len(r.Roots)-1])
}

// TargetsMeta parses the current targets.
func (r *Repository) TargetsMeta() (*metadata.Metadata[metadata.TargetsType], error) {
	if len(r.Targets) == 0 {
		return nil, errors.New("repository has no targets")
	}
	return metadata.Targets().FromBytes(r.Targets)
}

// Target returns the target file entry for path from targets.json.
func (r *Repository) Target(path string) (*metadata.TargetFiles, error) {
	t, err := r.TargetsMeta()
	if err != nil {
		return nil, err
	}
	tf, ok := t.Signed.Targets[path]
	if !ok {
		return nil, fmt.Errorf("target %q: %w", path, fs.ErrNotExist)
	}
	return tf, nil
}

// Metadata returns every file a device needs, by name: each root version
// as "<v>.root.json", the newest also as "root.json", and targets,
// snapshot and timestamp when present. The map shares no memory with r.
func (r *Repository) Metadata() map[string][]byte {
	m := map[string][]byte{}
	for i, b := range r.Roots {
		m[RootFile(int64(i+1))] = clone(b)
	}
	if len(r.Roots) > 0 {
		m[FileRoot] = clone(r.Roots[len(r.Roots)-1])
	}
	for name, b := range map[string][]byte{FileTargets: r.Targets, FileSnapshot: r.Snapshot, FileTimestamp: r.Timestamp} {
		if len(b) > 0 {
			m[name] = clone(b)
		}
	}
	return m
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// OpenDir reads a repository written by WriteDir: 1.root.json, 2.root.json,
// … up to the first missing version, then targets.json and, if present,
// snapshot.json and timestamp.json.
func OpenDir(dir string) (*Repository, error) {
	r := &Repository{}
	for v := int64(1); ; v++ {
		b, err := os.ReadFile(filepath.Join(dir, RootFile(v)))
		if errors.Is(err, fs.ErrNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		r.Roots = append(r.Roots, b)
	}
	if len(r.Roots) == 0 {
		return nil, fmt.Errorf("open repository %s: no 1.root.json", dir)
	}
	for name, dst := range map[string]*[]byte{FileTargets: &r.Targets, FileSnapshot: &r.Snapshot, FileTimestamp: &r.Timestamp} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("open repository: %w", err)
		}
		*dst = b
	}
	if len(r.Targets) == 0 {
		return nil, fmt.Errorf("open repository %s: no targets.json", dir)
	}
	return r, nil
}

// WriteDir writes every file of Metadata into dir atomically, each 0644.
func (r *Repository) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write repository: %w", err)
	}
	for name, b := range r.Metadata() {
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o644); err != nil {
			return fmt.Errorf("write repository: %w", err)
		}
	}
	return nil
}
