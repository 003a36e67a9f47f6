package bundle

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// ChunkSink receives every chunk Build reads; Store is one.
type ChunkSink interface {
	PutChunk(sum [32]byte, data []byte) error
}

// Options tune Build. The zero value builds with 256 KiB chunks and keeps
// no chunks.
type Options struct {
	ChunkSize int       // 0 = flotillapb.DefaultChunkSize
	Chunks    ChunkSink // if set, gets every chunk
}

// ErrRefused marks a folder Build will not make a bundle of (a symbolic
// link, a device file, a path the manifest cannot carry).
var ErrRefused = errors.New("refused")

// Build makes the manifest of the bundle in dir and returns its
// deterministic encoding and digest. With opts.Chunks set, every chunk is
// handed to it as it is read.
func Build(dir string, opts Options) ([]byte, string, error) {
	cs := opts.ChunkSize
	if cs == 0 {
		cs = pb.DefaultChunkSize
	}
	if cs < pb.MinChunkSize || cs > pb.MaxChunkSize {
		return nil, "", fmt.Errorf("build %s: chunk size %d: want %d to %d", dir, cs, pb.MinChunkSize, pb.MaxChunkSize)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("build: %w", err)
	}
	defer root.Close()
	cfg, cfgName, err := loadConfig(root)
	if err != nil {
		return nil, "", fmt.Errorf("build %s: %w", dir, err)
	}
	m, err := cfg.manifest(root)
	if err != nil {
		return nil, "", fmt.Errorf("build %s: %s: %w", dir, cfgName, err)
	}
	paths, err := listFiles(root, func(p string) bool { return p == cfgName || cfg.excluded(p) })
	if err != nil {
		return nil, "", fmt.Errorf("build %s: %w", dir, err)
	}
	for _, p := range paths {
		f, err := chunkFile(root, p, cs, opts.Chunks)
		if err != nil {
			return nil, "", fmt.Errorf("build %s: %w", dir, err)
		}
		m.Files = append(m.Files, f)
	}
	if err := m.Validate(); err != nil {
		return nil, "", fmt.Errorf("build %s: %w", dir, err)
	}
	raw, err := wire.Encode(m)
	if err != nil {
		return nil, "", fmt.Errorf("build %s: %w", dir, err)
	}
	if len(raw) > pb.MaxManifestSize {
		return nil, "", fmt.Errorf("build %s: manifest is %d bytes, at most %d", dir, len(raw), pb.MaxManifestSize)
	}
	return raw, Digest(raw), nil
}

// listFiles walks root and returns the paths of its regular files, sorted
// (fs.WalkDir visits in lexical order), refusing anything else but folders.
func listFiles(root *os.Root, skip func(string) bool) ([]string, error) {
	var out []string
	err := fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if skip(p) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		switch t := d.Type(); {
		case t.IsDir():
			return nil
		case t&fs.ModeSymlink != 0:
			return fmt.Errorf("%w: %s is a symbolic link", ErrRefused, p)
		case !t.IsRegular():
			return fmt.Errorf("%w: %s is not a regular file (%v)", ErrRefused, p, t)
		}
		if err := pb.CheckBundlePath(p); err != nil {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
		out = append(out, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// WalkDir's order puts "a/b" after "a-b" the way a byte sort does, since
	// it sorts each folder's names; sort anyway so the manifest is canonical.
	slices.Sort(out)
	return out, nil
}

// chunkFile reads one file in chunks of cs bytes.
func chunkFile(root *os.Root, p string, cs int, sink ChunkSink) (*pb.BundleFile, error) {
	before, err := root.Lstat(p)
	if err != nil {
		return nil, err
	}
	f, err := root.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() || !os.SameFile(before, st) {
		return nil, fmt.Errorf("%w: %s changed while building", ErrRefused, p)
	}
	mode := uint32(0o644)
	if st.Mode().Perm()&0o111 != 0 {
		mode = 0o755
	}
	bf := &pb.BundleFile{Path: path.Clean(p), Mode: mode, ChunkSize: uint32(cs)}
	whole := sha256.New()
	buf := make([]byte, cs)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			sum := sha256.Sum256(buf[:n])
			whole.Write(buf[:n])
			bf.Size += uint64(n)
			bf.Chunks = append(bf.Chunks, &pb.ChunkInfo{Sha256: sum[:], Length: uint32(n)})
			if bf.Size > pb.MaxFileSize {
				return nil, fmt.Errorf("%s: over %d bytes", p, uint64(pb.MaxFileSize))
			}
			if sink != nil {
				if err := sink.PutChunk(sum, buf[:n]); err != nil {
					return nil, fmt.Errorf("%s: %w", p, err)
				}
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	bf.Sha256 = whole.Sum(nil)
	return bf, nil
}
