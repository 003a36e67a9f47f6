// Package unpack assembles a bundle from verified chunks into a slot
// folder, treating the manifest as hostile even after its signature
// checked out.
//
// Unpack validates the manifest (flotillapb's path rules: relative, clean,
// no "..", no absolute path, no backslash or NUL, no file that is also a
// folder), applies the device's size limits, and writes every file into a
// fresh temporary folder beside the slot through an os.Root, creating each
// file with O_EXCL, so no path can leave the folder, follow a symbolic link
// or overwrite anything. Each chunk is checked again against the manifest's
// hash and length, and each file against its whole-file SHA-256. Modes are
// the manifest's permission bits only (never setuid, setgid or sticky;
// Validate allows at most 0755); only regular files and folders are made.
// Everything is fsynced, then the temporary folder is renamed onto the
// slot: a power cut leaves the old slot, or the new one, never a mix; a
// failed unpack leaves the slot untouched and removes its temporary folder.
package unpack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Errors callers branch on with errors.Is.
var (
	ErrInvalid  = errors.New("invalid manifest")
	ErrTooLarge = errors.New("bundle over the device's size limits")
	ErrMismatch = errors.New("content does not match the manifest")
	ErrUnsafe   = errors.New("unsafe slot path")
)

// ChunkReader gives a chunk's bytes by hash; agent/chunkstore.Store is one.
type ChunkReader interface {
	Read(ctx context.Context, sum [32]byte) ([]byte, error)
}

// Limits are the device's own caps, tighter than the manifest's; zero
// means the manifest limit.
type Limits struct {
	MaxFileSize  uint64
	MaxTotalSize uint64
}

// Unpack writes the bundle m, reading its chunks from src, into the folder
// slot, replacing whatever slot held only once every file is written,
// verified and synced. slot's parent folder must exist.
func Unpack(ctx context.Context, src ChunkReader, m *pb.BundleManifest, slot string, lim Limits) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("unpack: %w: %w", ErrInvalid, err)
	}
	if err := lim.check(m); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	slot = filepath.Clean(slot)
	if st, err := os.Lstat(slot); err == nil && !st.IsDir() {
		return fmt.Errorf("unpack: %w: %s exists and is not a folder (%v)", ErrUnsafe, slot, st.Mode().Type())
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("unpack: %w", err)
	}
	parent := filepath.Dir(slot)
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(slot)+".unpack-")
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	if err := writeAll(ctx, src, m, tmp); err != nil {
		return fmt.Errorf("unpack %s: %w", m.GetName(), err)
	}
	if err := swap(tmp, slot); err != nil {
		return fmt.Errorf("unpack %s: %w", m.GetName(), err)
	}
	done = true
	return nil
}

func (l Limits) check(m *pb.BundleManifest) error {
	var total uint64
	for _, f := range m.GetFiles() {
		if l.MaxFileSize > 0 && f.GetSize() > l.MaxFileSize {
			return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrTooLarge, f.GetPath(), f.GetSize(), l.MaxFileSize)
		}
		total += f.GetSize()
	}
	if l.MaxTotalSize > 0 && total > l.MaxTotalSize {
		return fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, total, l.MaxTotalSize)
	}
	return nil
}

// writeAll writes every file of m under dir, then fsyncs the folders.
func writeAll(ctx context.Context, src ChunkReader, m *pb.BundleManifest, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	dirs := map[string]bool{".": true}
	for _, f := range m.GetFiles() {
		if d := path.Dir(f.GetPath()); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
			for ; d != "."; d = path.Dir(d) {
				dirs[d] = true
			}
		}
		if err := writeFile(ctx, src, root, f); err != nil {
			return fmt.Errorf("%s: %w", f.GetPath(), err)
		}
	}
	for d := range dirs {
		if err := syncIn(root, d); err != nil {
			return err
		}
	}
	return nil
}

func writeFile(ctx context.Context, src ChunkReader, root *os.Root, f *pb.BundleFile) error {
	out, err := root.OpenFile(f.GetPath(), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	whole := sha256.New()
	for j, c := range f.GetChunks() {
		if err := ctx.Err(); err != nil {
			return err
		}
		sum := [32]byte(c.GetSha256())
		data, err := src.Read(ctx, sum)
		if err != nil {
			return fmt.Errorf("chunk %d: %w", j, err)
		}
		if len(data) != int(c.GetLength()) || sha256.Sum256(data) != sum {
			return fmt.Errorf("chunk %d: %w", j, ErrMismatch)
		}
		whole.Write(data)
		if _, err := out.Write(data); err != nil {
			return err
		}
	}
	if !bytes.Equal(whole.Sum(nil), f.GetSha256()) {
		return fmt.Errorf("whole file: %w", ErrMismatch)
	}
	if err := out.Chmod(fs.FileMode(f.GetMode()) & fs.ModePerm &^ 0o022); err != nil {
		return err
	}
	if err := out.Sync(); err != nil {
		return err
	}
	return out.Close()
}

func syncIn(root *os.Root, name string) error {
	d, err := root.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// swap renames tmp onto slot. An existing slot is first moved aside, so
// the rename is of a folder onto a free name, then removed.
func swap(tmp, slot string) error {
	parent := filepath.Dir(slot)
	var old string
	if _, err := os.Lstat(slot); err == nil {
		o, err := os.MkdirTemp(parent, "."+filepath.Base(slot)+".old-")
		if err != nil {
			return err
		}
		old = filepath.Join(o, "slot")
		if err := os.Rename(slot, old); err != nil {
			os.Remove(o)
			return err
		}
		defer os.RemoveAll(o)
	}
	if err := os.Rename(tmp, slot); err != nil {
		if old != "" {
			os.Rename(old, slot) // put the old slot back
		}
		return err
	}
	d, err := os.Open(parent)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
