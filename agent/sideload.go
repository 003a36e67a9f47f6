package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// The sideload folder. A field engineer drops one folder per bundle:
//
//	<sideload>/<any name>/
//	  manifest           the bundle manifest's exact bytes (the TUF target)
//	  target             its target path in the release repository, one line
//	                     (bundles/<model>/<release>.manifest)
//	  release/*.json     the release repository's metadata: root.json (and
//	                     N.root.json for rotations), targets.json,
//	                     snapshot.json, timestamp.json — fresh enough not to
//	                     have expired
//	  director/*.json    optional: director metadata naming this device
//	  files/...          the bundle's files at their manifest paths
//
// Once the folder has been unchanged for ModelsConfig.SideloadSettle it is
// verified with trust.VerifySideload (release signatures always; the
// director's too unless SideloadWaiveDirector authorises going without),
// every file against the manifest's hashes (agent/unpack), and handed to
// the lifecycle like any other release. The folder then moves to done/ or
// failed/ with a RESULT file saying what happened.
const (
	sideloadDone   = "done"
	sideloadFailed = "failed"
	sideloadResult = "RESULT"
)

// Limits on what a sideload folder's metadata may hold, before agent/trust
// applies its own per-role limits.
const (
	sideloadMaxMetaFiles = 64
	sideloadMaxMetaBytes = 4 << 20
	sideloadMaxTarget    = 1024
)

// errSideload marks a refusal of a dropped bundle.
var errSideload = errors.New("sideload refused")

// watchSideload takes bundles dropped into dir until ctx is done: those
// there at start, then each new one.
func (s *session) watchSideload(ctx context.Context, dir string) {
	log := s.a.log.With("component", "sideload", "dir", dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		log.Error("sideload folder unavailable", "err", err)
		return
	}
	settle := s.models.cfg.SideloadSettle
	if settle <= 0 {
		settle = 2 * time.Second
	}
	scan := func() {
		ents, err := os.ReadDir(dir)
		if err != nil {
			log.Warn("reading the sideload folder", "err", err)
			return
		}
		for _, e := range ents {
			if ctx.Err() != nil {
				return
			}
			if n := e.Name(); e.IsDir() && n != sideloadDone && n != sideloadFailed && !strings.HasPrefix(n, ".") {
				s.sideload(ctx, filepath.Join(dir, n), settle)
			}
		}
	}
	scan()
	err := watchFolder(ctx, dir, settle, func([]string) { scan() })
	if err != nil && ctx.Err() == nil {
		log.Error("sideload folder not watched", "err", err)
	}
}

// sideload waits for the dropped folder to be quiet, installs it, and
// moves it aside with its result.
func (s *session) sideload(ctx context.Context, dir string, settle time.Duration) {
	log := s.a.log.With("component", "sideload", "bundle", filepath.Base(dir))
	for prev := ""; ; {
		fp := fingerprint(dir)
		if fp == prev {
			break
		}
		prev = fp
		select {
		case <-ctx.Done():
			return
		case <-time.After(settle):
		}
	}
	if _, err := os.Stat(dir); err != nil {
		return // taken away meanwhile
	}
	msg, err := s.installSideload(ctx, dir)
	outcome, level := sideloadDone, "info"
	if err != nil {
		if ctx.Err() != nil {
			return // shutting down: try again at the next start
		}
		outcome, level, msg = sideloadFailed, "error", err.Error()
		log.Warn("sideloaded bundle refused", "err", err)
	} else {
		log.Info("sideloaded bundle installed", "result", msg)
	}
	s.a.journal(ctx, s.db, level, "sideload."+outcome, filepath.Base(dir)+": "+msg)
	if err := os.WriteFile(filepath.Join(dir, sideloadResult), []byte(outcome+": "+msg+"\n"), 0o644); err != nil {
		log.Warn("writing the sideload result", "err", err)
	}
	dest := filepath.Join(filepath.Dir(dir), outcome)
	if err := os.MkdirAll(dest, 0o700); err == nil {
		to := filepath.Join(dest, filepath.Base(dir))
		if _, err := os.Stat(to); err == nil {
			to += "-" + s.a.clock.Now().UTC().Format("20060102T150405.000")
		}
		err = os.Rename(dir, to)
		if err != nil {
			log.Warn("moving the sideloaded bundle aside", "err", err)
		}
	}
	if conn := s.current(); conn != nil {
		if err := s.publishReported(ctx, conn); err != nil {
			log.Warn("publish reported state", "err", err)
		}
	}
}

// fingerprint summarises a folder's entries (names, sizes, times), to
// tell whether a copy into it is still going on.
func fingerprint(dir string) string {
	var b strings.Builder
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			fmt.Fprintf(&b, "%s %d %d\n", p, fi.Size(), fi.ModTime().UnixNano())
		}
		return nil
	})
	return b.String()
}

// installSideload verifies the bundle in dir and activates it; it returns
// what it did.
func (s *session) installSideload(ctx context.Context, dir string) (string, error) {
	m := s.models
	inst, err := s.stage.installer(ctx)
	if err != nil {
		return "", err
	}
	v, err := inst.Verifier()
	if err != nil {
		return "", err
	}
	tb, err := readLimited(filepath.Join(dir, "target"), sideloadMaxTarget)
	if err != nil {
		return "", fmt.Errorf("%w: target: %w", errSideload, err)
	}
	target := strings.TrimSpace(string(tb))
	raw, err := readLimited(filepath.Join(dir, "manifest"), pb.MaxManifestSize)
	if err != nil {
		return "", fmt.Errorf("%w: manifest: %w", errSideload, err)
	}
	rel, err := readMetadata(filepath.Join(dir, "release"), true)
	if err != nil {
		return "", err
	}
	dirMeta, err := readMetadata(filepath.Join(dir, "director"), false)
	if err != nil {
		return "", err
	}
	t, err := v.VerifySideload(rel, dirMeta, target, m.cfg.SideloadWaiveDirector)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errSideload, err)
	}
	if err := t.Check(raw); err != nil {
		return "", fmt.Errorf("%w: %w", errSideload, err)
	}
	man := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, man); err != nil {
		return "", fmt.Errorf("%w: manifest: %w", errSideload, err)
	}
	if man.GetName() != t.Model || man.GetRelease() != t.ReleaseCounter {
		return "", fmt.Errorf("%w: manifest names %s release %d, the release repository %s release %d",
			errSideload, man.GetName(), man.GetRelease(), t.Model, t.ReleaseCounter)
	}
	if reason, ok := m.life.Rejected(t.Model, t.SHA256); ok {
		return "", fmt.Errorf("%w: %s release %d was rejected on this device: %s", errSideload, t.Model, t.ReleaseCounter, reason)
	}
	root, err := os.OpenRoot(filepath.Join(dir, "files"))
	if err != nil {
		return "", fmt.Errorf("%w: files: %w", errSideload, err)
	}
	defer root.Close()
	src, err := newDropChunks(root, man)
	if err != nil {
		return "", fmt.Errorf("%w: %w", errSideload, err)
	}
	if t.DirectorWaived {
		s.a.journal(ctx, s.db, "warn", "sideload.waived", fmt.Sprintf("%s release %d: director check waived by local authorisation", t.Model, t.ReleaseCounter))
	}
	err = m.activate(ctx, man, raw, func(slot string) error {
		if err := unpack.Unpack(ctx, src, man, slot, unpack.Limits{}); err != nil {
			return err
		}
		return v.RecordInstalled(t)
	})
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("%s release %d (%s) activated from the sideload folder", t.Model, t.ReleaseCounter, man.GetVersion())
	if t.DirectorWaived {
		msg += "; director check waived by local authorisation"
		m.setNotice(t.Model, fmt.Sprintf("notice: release %d sideloaded with the director check waived by local authorisation", t.ReleaseCounter))
	} else {
		m.setNotice(t.Model, "")
	}
	return msg, nil
}

// readMetadata reads a folder of TUF metadata (name → bytes). A missing
// folder is an error only when required.
func readMetadata(dir string, required bool) (map[string][]byte, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) && !required {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s metadata: %w", errSideload, filepath.Base(dir), err)
	}
	out := map[string][]byte{}
	total := 0
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		if len(out) == sideloadMaxMetaFiles {
			return nil, fmt.Errorf("%w: %s metadata: more than %d files", errSideload, filepath.Base(dir), sideloadMaxMetaFiles)
		}
		b, err := readLimited(filepath.Join(dir, e.Name()), sideloadMaxMetaBytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s metadata: %w", errSideload, filepath.Base(dir), err)
		}
		if total += len(b); total > sideloadMaxMetaBytes {
			return nil, fmt.Errorf("%w: %s metadata over %d bytes", errSideload, filepath.Base(dir), sideloadMaxMetaBytes)
		}
		out[e.Name()] = b
	}
	if len(out) == 0 && required {
		return nil, fmt.Errorf("%w: %s metadata: no .json files", errSideload, filepath.Base(dir))
	}
	return out, nil
}

// dropChunks serves a dropped bundle's files as the chunks agent/unpack
// reads (and checks against the manifest's hashes), read on demand
// through an os.Root so no path leaves the files folder.
type dropChunks struct {
	root *os.Root
	at   map[[32]byte]chunkAt
}

type chunkAt struct {
	path   string
	off    int64
	length int
}

func newDropChunks(root *os.Root, m *pb.BundleManifest) (*dropChunks, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	d := &dropChunks{root: root, at: map[[32]byte]chunkAt{}}
	for _, f := range m.GetFiles() {
		p := filepath.FromSlash(f.GetPath())
		fi, err := root.Lstat(p)
		if err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
		if !fi.Mode().IsRegular() || uint64(fi.Size()) != f.GetSize() {
			return nil, fmt.Errorf("files: %s is not the manifest's file (%d bytes, want %d)", f.GetPath(), fi.Size(), f.GetSize())
		}
		var off int64
		for _, c := range f.GetChunks() {
			var sum [32]byte
			copy(sum[:], c.GetSha256())
			d.at[sum] = chunkAt{path: p, off: off, length: int(c.GetLength())}
			off += int64(c.GetLength())
		}
	}
	return d, nil
}

// Read implements unpack.ChunkReader.
func (d *dropChunks) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	c, ok := d.at[sum]
	if !ok {
		return nil, fmt.Errorf("chunk %x is not in the manifest", sum[:4])
	}
	f, err := d.root.Open(c.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, c.length)
	if _, err := f.ReadAt(b, c.off); err != nil && !(errors.Is(err, io.EOF) && c.length == 0) {
		return nil, fmt.Errorf("%s at %d: %w", c.path, c.off, err)
	}
	return b, nil
}

var _ unpack.ChunkReader = (*dropChunks)(nil)
