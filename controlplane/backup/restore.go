package backup

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Limits bound what Restore accepts.
type Limits struct {
	MaxFiles     int   // entries besides backup.json; default 1,000,000
	MaxBytes     int64 // all files together; default 256 GiB
	MaxManifest  int64 // backup.json; default 256 MiB
	MaxPathBytes int   // one path; default 1024
}

func (l Limits) withDefaults() Limits {
	if l.MaxFiles <= 0 {
		l.MaxFiles = 1_000_000
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 256 << 30
	}
	if l.MaxManifest <= 0 {
		l.MaxManifest = 256 << 20
	}
	if l.MaxPathBytes <= 0 {
		l.MaxPathBytes = 1024
	}
	return l
}

// Restore unpacks the archive r into dataDir, which must not exist or be
// empty. It writes into a new folder beside dataDir and renames it into
// place only when the whole archive checked out; on any error nothing is
// left behind and dataDir is as it was.
func Restore(r io.Reader, dataDir string, lim Limits) (*Manifest, error) {
	lim = lim.withDefaults()
	if ents, err := os.ReadDir(dataDir); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("restore: %w: %s", ErrNotEmpty, dataDir)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("restore: %w", err)
	}
	parent := filepath.Dir(filepath.Clean(dataDir))
	if err := os.MkdirAll(parent, 0o700); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, ".restore-")
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	m, err := unpack(r, tmp, lim)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	os.Remove(dataDir) // an empty folder: the rename needs it gone
	if err := os.Rename(tmp, dataDir); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	done = true
	return m, nil
}

func bad(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrBadArchive, fmt.Sprintf(format, a...))
}

// cleanPath accepts a relative, slash-separated path with no empty, ".",
// ".." or hidden-temporary parts.
func cleanPath(p string, max int) bool {
	if p == "" || len(p) > max || strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\\\x00") || path.Clean(p) != p {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

func unpack(r io.Reader, dir string, lim Limits) (*Manifest, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, bad("%v", err)
	}
	tr := tar.NewReader(gz)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName || hdr.Typeflag != tar.TypeReg {
		return nil, bad("the first entry must be %s", ManifestName)
	}
	if hdr.Size > lim.MaxManifest {
		return nil, bad("%s of %d bytes, over %d", ManifestName, hdr.Size, lim.MaxManifest)
	}
	var m Manifest
	dec := json.NewDecoder(io.LimitReader(tr, lim.MaxManifest))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, bad("%s: %v", ManifestName, err)
	}
	if m.Format != Format {
		return nil, bad("format %d; this server reads format %d", m.Format, Format)
	}
	if len(m.Files) > lim.MaxFiles {
		return nil, bad("%d files, over %d", len(m.Files), lim.MaxFiles)
	}
	want := make(map[string]Entry, len(m.Files))
	var total int64
	for _, e := range m.Files {
		if !cleanPath(e.Path, lim.MaxPathBytes) || e.Path == ManifestName {
			return nil, bad("path %q", e.Path)
		}
		if _, dup := want[e.Path]; dup {
			return nil, bad("%s listed twice", e.Path)
		}
		if e.Size < 0 || len(e.SHA256) != 64 {
			return nil, bad("%s: size %d, sha256 %q", e.Path, e.Size, e.SHA256)
		}
		total += e.Size
		if total > lim.MaxBytes {
			return nil, bad("over %d bytes in all", lim.MaxBytes)
		}
		want[e.Path] = e
	}
	// Parents of listed files must not themselves be listed files.
	for p := range want {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, clash := want[d]; clash {
				return nil, bad("%s is both a file and a folder", d)
			}
		}
	}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, bad("%v", err)
		}
		e, ok := want[hdr.Name]
		if !ok {
			return nil, bad("entry %q is not listed (or came twice)", hdr.Name)
		}
		delete(want, hdr.Name)
		if hdr.Typeflag != tar.TypeReg || hdr.Size != e.Size {
			return nil, bad("%s: type %q, size %d; want a plain file of %d bytes", hdr.Name, hdr.Typeflag, hdr.Size, e.Size)
		}
		dst := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return nil, err
		}
		if err := writeChecked(dst, tr, e); err != nil {
			return nil, err
		}
	}
	for p := range want {
		return nil, bad("%s is listed but missing (a truncated archive?)", p)
	}
	return &m, nil
}

func writeChecked(dst string, r io.Reader, e Entry) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(r, e.Size+1))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return bad("%s: %v", e.Path, err)
	}
	if n != e.Size || hex.EncodeToString(h.Sum(nil)) != e.SHA256 {
		return bad("%s does not match its listing", e.Path)
	}
	return nil
}
