package server

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// directorRootLife is how long the director's root stays valid. Devices
// refuse an expired root, so rotate before then (docs/security.md).
const directorRootLife = 5 * 365 * 24 * time.Hour

// trustRepos is the server's side of bundle trust, in DATA/release/:
//
//	repo/                  the release repository as operators pushed it, plus
//	                       the snapshot and timestamp this server signs
//	online-*.pem           the release repository's online key (copied from
//	                       the operator's `flotctl keys generate` folder)
//	director/online-*.pem  the director's key, made at first start (0600)
//	director/N.root.json   the director's root versions
type trustRepos struct {
	dir       string
	onlineKey string // configured path of the online key; "" = DATA/release/online-*.pem
	now       func() time.Time
	exp       release.Expiry

	mu       sync.Mutex
	repo     *release.Repository // nil until the first push
	director *release.Director
}

func openTrust(dir, onlineKey string, now func() time.Time, exp release.Expiry) (*trustRepos, error) {
	t := &trustRepos{dir: dir, onlineKey: onlineKey, now: now, exp: exp}
	ddir := filepath.Join(dir, "director")
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return nil, fmt.Errorf("release folder: %w", err)
	}
	keys, err := release.ReadKeys(ddir, release.RoleOnline)
	if err != nil {
		return nil, err
	}
	switch len(keys) {
	case 0:
		k, err := release.GenerateKey(release.RoleOnline)
		if err != nil {
			return nil, err
		}
		if t.director, err = release.NewDirector(k, now(), directorRootLife); err != nil {
			return nil, err
		}
		// The root first: a key without a root is made again at next start.
		if err := writeRoots(ddir, t.director.Roots()); err != nil {
			return nil, err
		}
		if _, err := release.WriteKey(ddir, k); err != nil {
			return nil, err
		}
	case 1:
		var roots [][]byte
		for v := int64(1); ; v++ {
			b, err := os.ReadFile(filepath.Join(ddir, release.RootFile(v)))
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("director root: %w", err)
			}
			roots = append(roots, b)
		}
		if t.director, err = release.OpenDirector(keys[0], roots); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("director: %d keys in %s, want one", len(keys), ddir)
	}
	if _, err := os.Stat(filepath.Join(dir, "repo", release.RootFile(1))); err == nil {
		if t.repo, err = release.OpenDir(filepath.Join(dir, "repo")); err != nil {
			return nil, err
		}
	}
	return t, nil
}

func writeRoots(dir string, roots [][]byte) error {
	for i, b := range roots {
		if err := writeFile0600(filepath.Join(dir, release.RootFile(int64(i+1))), b); err != nil {
			return err
		}
	}
	return nil
}

// writeFile0600 writes a file atomically (temp, fsync, rename, fsync).
func writeFile0600(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// online reads the release repository's online key.
func (t *trustRepos) online() (*release.Key, error) {
	if t.onlineKey != "" {
		return release.ReadKey(t.onlineKey)
	}
	keys, err := release.ReadKeys(t.dir, release.RoleOnline)
	if err != nil {
		return nil, err
	}
	if len(keys) != 1 {
		return nil, fmt.Errorf("%w: the release repository's online key: want one online-*.pem in %s (from `flotctl keys generate`), found %d",
			registry.ErrUnavailable, t.dir, len(keys))
	}
	return keys[0], nil
}

// Roots are what devices are given at enrolment: the newest release root
// (nil before the first push) and the director's root.
func (t *trustRepos) Roots() (releaseRoot, directorRoot []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo != nil {
		releaseRoot = clone(t.repo.Roots[len(t.repo.Roots)-1])
	}
	return releaseRoot, t.director.Root()
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Metadata is the release repository's metadata for devices; nil before
// the first push.
func (t *trustRepos) Metadata() map[string][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo == nil || len(t.repo.Timestamp) == 0 {
		return nil
	}
	return t.repo.Metadata()
}

// Push takes metadata the operator signed offline: root versions and
// targets.json. Roots must continue the trusted chain (the first push
// must start it at version 1, self-signed, naming this server's online
// key); targets must verify under the newest root, be unexpired and not
// older than the trusted targets. Then snapshot and timestamp are signed
// and everything is written. Nothing changes on refusal.
func (t *trustRepos) Push(files map[string][]byte) (*release.Repository, error) {
	online, err := t.online()
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	next, err := t.candidate(files)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", registry.ErrInvalid, err)
	}
	root, _ := next.Root()
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if r := root.Signed.Roles[role]; r == nil || len(r.KeyIDs) != 1 || r.KeyIDs[0] != online.ID() {
			return nil, fmt.Errorf("%w: root v%d does not name this server's online key %s for %s", registry.ErrInvalid, root.Signed.Version, online.ID()[:16], role)
		}
	}
	if _, err := next.Publish(online, t.now(), t.exp); err != nil {
		return nil, fmt.Errorf("%w: %w", registry.ErrInvalid, err)
	}
	if err := next.WriteDir(filepath.Join(t.dir, "repo")); err != nil {
		return nil, err
	}
	t.repo = next
	return next, nil
}

func (t *trustRepos) candidate(files map[string][]byte) (*release.Repository, error) {
	next := &release.Repository{}
	if t.repo != nil {
		next.Roots = append(next.Roots, t.repo.Roots...)
		next.Snapshot, next.Timestamp = t.repo.Snapshot, t.repo.Timestamp
	}
	for name := range files {
		if name != release.FileRoot && name != release.FileTargets && !isRootVersion(name) {
			return nil, fmt.Errorf("%s: only N.root.json, root.json and targets.json are pushed (the server signs snapshot and timestamp)", name)
		}
	}
	for v := int64(1); ; v++ {
		b, ok := files[release.RootFile(v)]
		if !ok {
			break
		}
		if int(v) <= len(next.Roots) {
			if !bytes.Equal(b, next.Roots[v-1]) {
				return nil, fmt.Errorf("root v%d differs from the trusted one", v)
			}
			continue
		}
		if err := chainRoot(next.Roots, b, v); err != nil {
			return nil, err
		}
		next.Roots = append(next.Roots, b)
	}
	if b, ok := files[release.FileRoot]; ok && len(next.Roots) > 0 && !bytes.Equal(b, next.Roots[len(next.Roots)-1]) {
		return nil, errors.New("root.json is not the newest N.root.json")
	}
	if len(next.Roots) == 0 {
		return nil, errors.New("no root: push 1.root.json (the whole repo folder flotctl keys generate wrote)")
	}
	root, err := next.Root()
	if err != nil {
		return nil, err
	}
	if root.Signed.IsExpired(t.now()) {
		return nil, fmt.Errorf("root v%d expired at %s", root.Signed.Version, root.Signed.Expires)
	}
	tb, ok := files[release.FileTargets]
	if !ok {
		if t.repo == nil {
			return nil, errors.New("no targets.json")
		}
		tb = t.repo.Targets
	}
	targets, err := metadata.Targets().FromBytes(tb)
	if err != nil {
		return nil, fmt.Errorf("targets.json: %w", err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return nil, fmt.Errorf("targets.json does not verify under root v%d: %w", root.Signed.Version, err)
	}
	if targets.Signed.IsExpired(t.now()) {
		return nil, fmt.Errorf("targets.json v%d expired at %s", targets.Signed.Version, targets.Signed.Expires)
	}
	if t.repo != nil {
		cur, err := t.repo.TargetsMeta()
		if err == nil && (targets.Signed.Version < cur.Signed.Version ||
			targets.Signed.Version == cur.Signed.Version && !bytes.Equal(tb, t.repo.Targets)) {
			return nil, fmt.Errorf("targets.json v%d does not follow the trusted v%d", targets.Signed.Version, cur.Signed.Version)
		}
	}
	next.Targets = tb
	return next, nil
}

func isRootVersion(name string) bool {
	v, ok := strings.CutSuffix(name, ".root.json")
	n, err := strconv.ParseInt(v, 10, 64)
	return ok && err == nil && n > 0 && strconv.FormatInt(n, 10) == v
}

// chainRoot checks root version v: self-signed to its own threshold and,
// after version 1, signed to the threshold of version v-1.
func chainRoot(prev [][]byte, b []byte, v int64) error {
	r, err := metadata.Root().FromBytes(b)
	if err != nil {
		return fmt.Errorf("root v%d: %w", v, err)
	}
	if r.Signed.Version != v {
		return fmt.Errorf("%s holds root version %d", release.RootFile(v), r.Signed.Version)
	}
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("root v%d is not signed by its own root keys: %w", v, err)
	}
	if v == 1 {
		return nil
	}
	old, err := metadata.Root().FromBytes(prev[v-2])
	if err != nil {
		return err
	}
	if err := old.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("root v%d is not signed by root v%d's keys: %w", v, v-1, err)
	}
	return nil
}

// Refresh re-signs snapshot and timestamp where half their life has gone,
// reporting whether anything changed.
func (t *trustRepos) Refresh() (bool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo == nil {
		return false, nil
	}
	online, err := t.online()
	if err != nil {
		return false, err
	}
	next := *t.repo
	changed, err := next.Publish(online, t.now(), t.exp)
	if err != nil || !changed {
		return false, err
	}
	if err := next.WriteDir(filepath.Join(t.dir, "repo")); err != nil {
		return false, err
	}
	t.repo = &next
	return true, nil
}

// releaseCustom reads a release target's custom metadata.
func releaseCustom(tf *metadata.TargetFiles) (release.ReleaseCustom, bool) {
	var c release.ReleaseCustom
	if tf.Custom == nil || json.Unmarshal(*tf.Custom, &c) != nil || c.Model == "" || c.ReleaseCounter == 0 {
		return c, false
	}
	return c, true
}

func targetDigest(tf *metadata.TargetFiles) string { return hex.EncodeToString(tf.Hashes["sha256"]) }

// Targets lists the released manifests, sorted by path.
func (t *trustRepos) Targets() ([]*metadata.TargetFiles, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo == nil {
		return nil, fmt.Errorf("%w: no release repository yet: push one with flotctl release push", registry.ErrNotFound)
	}
	tm, err := t.repo.TargetsMeta()
	if err != nil {
		return nil, err
	}
	out := make([]*metadata.TargetFiles, 0, len(tm.Signed.Targets))
	for _, tf := range tm.Signed.Targets {
		out = append(out, tf)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// Sign signs a device's director metadata naming targets, at version rev.
func (t *trustRepos) Sign(device string, rev uint64, targets []*metadata.TargetFiles) (map[string][]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.director.Sign(release.Assignment{DeviceID: device, Targets: targets, Version: int64(rev)}, t.now())
}

// view summarises a repository for the API.
func releaseView(r *release.Repository, uploaded func(digest string) bool) api.ReleaseView {
	var v api.ReleaseView
	if root, err := r.Root(); err == nil {
		v.RootVersion = root.Signed.Version
	}
	if tm, err := r.TargetsMeta(); err == nil {
		v.TargetsVersion, v.TargetsExpires = tm.Signed.Version, tm.Signed.Expires
		for _, tf := range tm.Signed.Targets {
			c, _ := releaseCustom(tf)
			d := targetDigest(tf)
			v.Targets = append(v.Targets, api.ReleaseTarget{Path: tf.Path, Model: c.Model, Release: c.ReleaseCounter,
				Version: c.Version, Digest: d, Length: tf.Length, Uploaded: uploaded(d)})
		}
		sort.Slice(v.Targets, func(i, j int) bool { return v.Targets[i].Path < v.Targets[j].Path })
	}
	if ts, err := metadata.Timestamp().FromBytes(r.Timestamp); err == nil {
		v.TimestampVersion = ts.Signed.Version
	}
	return v
}
