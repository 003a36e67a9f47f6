package server

import (
	"bytes"
	"context"
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
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// directorRootLife is how long the director's root stays valid. Devices
// refuse an expired root, so rotate before then (docs/security.md).
const directorRootLife = 5 * 365 * 24 * time.Hour

// trustRepos is the server's side of bundle trust. The signed metadata
// of both repositories is in the database (store.ReleaseFiles: the
// "release" and "director" repositories), which replicas share; the keys
// are files in DATA/release/, each replica given the same ones:
//
//	online-*.pem           the release repository's online key (copied from
//	                       the operator's `flotctl keys generate` folder)
//	director/online-*.pem  the director's key, made by the first server to
//	                       start on the database (0600); copy it to the others
//	repo/, director/N.root.json  a copy of the metadata, for operators; the
//	                       database is what is served. A server starting on a
//	                       database without the metadata imports these once.
//
// Every write names the generation of the repository it read, so of two
// replicas signing on the same base one wins and the other reads again: a
// timestamp version is never published twice. The periodic re-signing
// runs on the rollout scheduler's leader only, fenced by its lease's
// epoch; the other replicas serve what the database holds.
type trustRepos struct {
	dir       string
	onlineKey string // configured path of the online key; "" = DATA/release/online-*.pem
	now       func() time.Time
	exp       release.Expiry
	db        releaseDB

	mu       sync.Mutex
	repo     *release.Repository // nil until the first push
	gen      int64               // the database's generation of repo
	director *release.Director
}

// releaseDB is the store's part that keeps the repositories' files;
// *store.Store is one.
type releaseDB interface {
	ReleaseGeneration(ctx context.Context, repo string) (int64, error)
	ReleaseFiles(ctx context.Context, repo string) (map[string]store.ReleaseFile, int64, error)
	PutReleaseFiles(ctx context.Context, repo string, base int64, files []store.ReleaseFile) (int64, error)
	PutReleaseFilesFenced(ctx context.Context, lease string, epoch uint64, repo string, base int64, files []store.ReleaseFile) (int64, error)
}

// The repositories' names in the database.
const (
	repoRelease  = "release"
	repoDirector = "director"
)

// dbTimeout bounds the release repositories' database calls made
// without a caller's context.
const dbTimeout = 10 * time.Second

// ErrKeyMismatch: this replica's key is not the one the metadata in the
// database names; it refuses to start.
var ErrKeyMismatch = errors.New("key does not match the metadata in the database")

func openTrust(ctx context.Context, dir, onlineKey string, now func() time.Time, exp release.Expiry, db releaseDB) (*trustRepos, error) {
	t := &trustRepos{dir: dir, onlineKey: onlineKey, now: now, exp: exp, db: db}
	if err := t.openDirector(ctx); err != nil {
		return nil, err
	}
	if err := t.openRelease(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// openDirector reads the director's roots from the database and its key
// from DATA/release/director. On a database without them, the folder's
// (a server from before they moved) are imported, or a new key and root
// made, the key written first; if another replica stored its director
// first, this one must be given that key.
func (t *trustRepos) openDirector(ctx context.Context) error {
	ddir := filepath.Join(t.dir, "director")
	if err := os.MkdirAll(ddir, 0o700); err != nil {
		return fmt.Errorf("release folder: %w", err)
	}
	keys, err := release.ReadKeys(ddir, release.RoleOnline)
	if err != nil {
		return err
	}
	if len(keys) > 1 {
		return fmt.Errorf("director: %d keys in %s, want one", len(keys), ddir)
	}
	files, gen, err := t.db.ReleaseFiles(ctx, repoDirector)
	if err != nil {
		return err
	}
	if gen == 0 {
		made := ""
		var d *release.Director
		folderRoots, err := readRoots(ddir)
		if err != nil {
			return err
		}
		if len(keys) == 0 && len(folderRoots) > 0 {
			return fmt.Errorf("director: %w: %s holds %d root versions but no key: restore its online-*.pem", ErrKeyMismatch, ddir, len(folderRoots))
		}
		if len(keys) == 0 {
			k, err := release.GenerateKey(release.RoleOnline)
			if err != nil {
				return err
			}
			if made, err = release.WriteKey(ddir, k); err != nil {
				return err
			}
			keys = []*release.Key{k}
		}
		if len(folderRoots) > 0 {
			if d, err = release.OpenDirector(keys[0], folderRoots); err != nil {
				return err
			}
		} else if d, err = release.NewDirector(keys[0], t.now(), directorRootLife); err != nil {
			return err
		}
		rf, err := repoFiles(&release.Repository{Roots: d.Roots()})
		if err != nil {
			return err
		}
		switch _, err := t.db.PutReleaseFiles(ctx, repoDirector, 0, rf); {
		case errors.Is(err, store.ErrChanged):
			// Another replica stored its director first: this one's key
			// (if just made) signs nothing.
			if made != "" {
				os.Remove(made)
				keys = nil
			}
		case err != nil:
			return err
		default:
			if err := writeRoots(ddir, d.Roots()); err != nil {
				return err
			}
		}
		if files, _, err = t.db.ReleaseFiles(ctx, repoDirector); err != nil {
			return err
		}
	}
	roots := rootsOf(files)
	if len(roots) == 0 {
		return fmt.Errorf("director: the database holds no 1.root.json")
	}
	if len(keys) == 0 {
		return fmt.Errorf("director: %w: no key in %s; another replica made the director on this database: copy its release/director/online-*.pem here (0600)", ErrKeyMismatch, ddir)
	}
	if t.director, err = release.OpenDirector(keys[0], roots); err != nil {
		return fmt.Errorf("director: %w: %s holds key %s: give every replica the same release/director/online-*.pem: %w", ErrKeyMismatch, ddir, keys[0].ID()[:16], err)
	}
	return nil
}

func readRoots(dir string) ([][]byte, error) {
	var roots [][]byte
	for v := int64(1); ; v++ {
		b, err := os.ReadFile(filepath.Join(dir, release.RootFile(v)))
		if errors.Is(err, fs.ErrNotExist) {
			return roots, nil
		}
		if err != nil {
			return nil, fmt.Errorf("root: %w", err)
		}
		roots = append(roots, b)
	}
}

// openRelease reads the release repository from the database, importing
// the folder's copy once on a database without it, and checks the online
// key this replica holds is the one its root names.
func (t *trustRepos) openRelease(ctx context.Context) error {
	gen, err := t.db.ReleaseGeneration(ctx, repoRelease)
	if err != nil {
		return err
	}
	if folder := filepath.Join(t.dir, "repo"); gen == 0 {
		if _, err := os.Stat(filepath.Join(folder, release.RootFile(1))); err == nil {
			r, err := release.OpenDir(folder)
			if err != nil {
				return err
			}
			rf, err := repoFiles(r)
			if err != nil {
				return fmt.Errorf("import release repository: %w", err)
			}
			if _, err := t.db.PutReleaseFiles(ctx, repoRelease, 0, rf); err != nil && !errors.Is(err, store.ErrChanged) {
				return fmt.Errorf("import release repository: %w", err)
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.syncLocked(ctx); err != nil {
		return err
	}
	if t.repo == nil {
		return nil
	}
	online, err := t.online()
	if err != nil {
		return nil // no key: this replica serves, and cannot re-sign (logged at refresh)
	}
	root, err := t.repo.Root()
	if err != nil {
		return err
	}
	for _, role := range []string{metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if r := root.Signed.Roles[role]; r == nil || len(r.KeyIDs) != 1 || r.KeyIDs[0] != online.ID() {
			return fmt.Errorf("release: %w: the online key %s is not root v%d's %s key: give every replica the release repository's online key",
				ErrKeyMismatch, online.ID()[:16], root.Signed.Version, role)
		}
	}
	return nil
}

// syncLocked reads the release repository again when the database's
// generation moved, reporting whether it did. t.mu is held.
func (t *trustRepos) syncLocked(ctx context.Context) (bool, error) {
	gen, err := t.db.ReleaseGeneration(ctx, repoRelease)
	if err != nil {
		return false, err
	}
	if gen == t.gen {
		return false, nil
	}
	files, gen, err := t.db.ReleaseFiles(ctx, repoRelease)
	if err != nil {
		return false, err
	}
	r := &release.Repository{Roots: rootsOf(files), Targets: files[release.FileTargets].Data,
		Snapshot: files[release.FileSnapshot].Data, Timestamp: files[release.FileTimestamp].Data}
	if len(r.Roots) == 0 || len(r.Targets) == 0 {
		return false, fmt.Errorf("release repository in the database: generation %d lacks 1.root.json or targets.json", gen)
	}
	t.repo, t.gen = r, gen
	t.mirror(r)
	return true, nil
}

// sync is syncLocked with the lock taken and a bounded context.
func (t *trustRepos) sync(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.syncLocked(ctx)
}

// current is the release repository as the database holds it now; nil
// before the first push. The caller must not change it.
func (t *trustRepos) current(ctx context.Context) (*release.Repository, error) {
	if _, err := t.sync(ctx); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.repo, nil
}

// mirror writes the repository into DATA/release/repo for operators; the
// database stays what is served, so a failure changes nothing.
func (t *trustRepos) mirror(r *release.Repository) {
	_ = r.WriteDir(filepath.Join(t.dir, "repo"))
}

// rootsOf returns the consecutive N.root.json from 1.
func rootsOf(files map[string]store.ReleaseFile) [][]byte {
	var roots [][]byte
	for v := int64(1); ; v++ {
		f, ok := files[release.RootFile(v)]
		if !ok {
			return roots
		}
		roots = append(roots, f.Data)
	}
}

// repoFiles lists r's files with the version each one's signed part
// carries, as the database keeps them.
func repoFiles(r *release.Repository) ([]store.ReleaseFile, error) {
	var out []store.ReleaseFile
	for i, b := range r.Roots {
		out = append(out, store.ReleaseFile{Name: release.RootFile(int64(i + 1)), Version: int64(i + 1), Data: b})
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{release.FileTargets, r.Targets}, {release.FileSnapshot, r.Snapshot}, {release.FileTimestamp, r.Timestamp}} {
		if len(f.b) == 0 {
			continue
		}
		var v struct {
			Signed struct {
				Version int64 `json:"version"`
			} `json:"signed"`
		}
		if err := json.Unmarshal(f.b, &v); err != nil || v.Signed.Version < 1 {
			return nil, fmt.Errorf("%s: no version (%v)", f.name, err)
		}
		out = append(out, store.ReleaseFile{Name: f.name, Version: v.Signed.Version, Data: f.b})
	}
	return out, nil
}

// changedFiles is repoFiles of next less what cur already holds.
func changedFiles(cur, next *release.Repository) ([]store.ReleaseFile, error) {
	all, err := repoFiles(next)
	if err != nil || cur == nil {
		return all, err
	}
	have := cur.Metadata()
	var out []store.ReleaseFile
	for _, f := range all {
		if !bytes.Equal(have[f.Name], f.Data) {
			out = append(out, f)
		}
	}
	return out, nil
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
	// On a database error the repository last read serves.
	_, _ = t.sync(context.Background())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo != nil {
		releaseRoot = clone(t.repo.Roots[len(t.repo.Roots)-1])
	}
	return releaseRoot, t.director.Root()
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// Metadata is the release repository's metadata for devices, as this
// replica last read it from the database; nil before the first push.
func (t *trustRepos) Metadata() map[string][]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.repo == nil || len(t.repo.Timestamp) == 0 {
		return nil
	}
	return t.repo.Metadata()
}

// Generation is the database's generation of the metadata Metadata
// returns.
func (t *trustRepos) Generation() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gen
}

// pushTries is how often Push signs again when another replica wrote
// the repository between its read and its write.
const pushTries = 3

// Push takes metadata the operator signed offline: root versions and
// targets.json. Roots must continue the trusted chain (the first push
// must start it at version 1, self-signed, naming this server's online
// key); targets must verify under the newest root, be unexpired and not
// older than the trusted targets. Then snapshot and timestamp are signed
// and everything is written to the database, on the generation read.
// Nothing changes on refusal.
func (t *trustRepos) Push(ctx context.Context, files map[string][]byte) (*release.Repository, error) {
	online, err := t.online()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	for try := 1; ; try++ {
		if _, err := t.syncLocked(ctx); err != nil {
			return nil, err
		}
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
		rf, err := changedFiles(t.repo, next)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", registry.ErrInvalid, err)
		}
		if len(rf) == 0 {
			return next, nil
		}
		gen, err := t.db.PutReleaseFiles(ctx, repoRelease, t.gen, rf)
		switch {
		case errors.Is(err, store.ErrChanged) && try < pushTries:
			continue
		case errors.Is(err, store.ErrChanged), errors.Is(err, store.ErrConflict):
			return nil, fmt.Errorf("%w: the release repository changed meanwhile: %w", registry.ErrConflict, err)
		case err != nil:
			return nil, err
		}
		t.repo, t.gen = next, gen
		t.mirror(next)
		return next, nil
	}
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

// Refresh reads the repository again and re-signs snapshot and timestamp
// where half their life has gone, writing them under the scheduler's
// lease at epoch: refused (store.ErrFenced) once a newer leader began, so
// a leader that stalled cannot publish after its successor. It reports
// whether the metadata served changed (read or signed).
func (t *trustRepos) Refresh(ctx context.Context, lease string, epoch uint64) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, dbTimeout)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	read, err := t.syncLocked(ctx)
	if err != nil || t.repo == nil {
		return read, err
	}
	online, err := t.online()
	if err != nil {
		return read, err
	}
	next := *t.repo
	changed, err := next.Publish(online, t.now(), t.exp)
	if err != nil || !changed {
		return read, err
	}
	rf, err := changedFiles(t.repo, &next)
	if err != nil {
		return read, err
	}
	gen, err := t.db.PutReleaseFilesFenced(ctx, lease, epoch, repoRelease, t.gen, rf)
	if err != nil {
		return read, err // ErrChanged: signed again on what is read next time
	}
	t.repo, t.gen = &next, gen
	t.mirror(&next)
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
	ctx, cancel := context.WithTimeout(context.Background(), dbTimeout)
	defer cancel()
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, err := t.syncLocked(ctx); err != nil {
		return nil, err
	}
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
