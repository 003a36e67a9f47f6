package flotctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// Offline release-repository commands. They never talk to the server: the
// root and targets keys stay on the operator's machine.
//
//	D/keys/root-*.pem, D/keys/targets-*.pem   offline keys (0600, folder 0700)
//	D/keys/retired/                            keys replaced by a rotation
//	D/online/online-*.pem                      the snapshot/timestamp key: copy it to the server
//	D/repo/                                    1.root.json, 2.root.json, …, root.json, targets.json

func offlineCommand(env Env, args []string) error {
	now := time.Now()
	switch {
	case len(args) >= 2 && args[0] == "keys" && args[1] == "generate":
		return keysGenerate(env, args[2:], now)
	case len(args) >= 2 && args[0] == "keys" && args[1] == "rotate":
		return keysRotate(env, args[2:], now)
	case len(args) >= 2 && args[0] == "release" && args[1] == "add":
		return releaseAdd(env, args[2:], now)
	}
	return fmt.Errorf("%w: keys generate|rotate, release add", errUsage)
}

type keyDir string

func (d keyDir) keys() string    { return filepath.Join(string(d), "keys") }
func (d keyDir) online() string  { return filepath.Join(string(d), "online") }
func (d keyDir) repo() string    { return filepath.Join(string(d), "repo") }
func (d keyDir) retired() string { return filepath.Join(string(d), "keys", "retired") }

func genKeys(role string, n int) ([]*release.Key, error) {
	var ks []*release.Key
	for range n {
		k, err := release.GenerateKey(role)
		if err != nil {
			return nil, err
		}
		ks = append(ks, k)
	}
	return ks, nil
}

func writeKeys(dir string, ks ...*release.Key) error {
	for _, k := range ks {
		if _, err := release.WriteKey(dir, k); err != nil {
			return err
		}
	}
	return nil
}

func keysGenerate(env Env, args []string, now time.Time) error {
	fs := subFlags("keys generate")
	dir := fs.String("dir", "", "folder for the keys and the repository (required)")
	threshold := fs.Int("threshold", 2, "signatures needed for root and targets")
	count := fs.Int("count", 3, "root keys and targets keys to make")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if *dir == "" || *count < *threshold || *threshold < 1 {
		return fmt.Errorf("%w: keys generate -dir D [-threshold T] [-count N], 1 ≤ T ≤ N", errUsage)
	}
	d := keyDir(*dir)
	if _, err := os.Stat(filepath.Join(d.repo(), release.RootFile(1))); err == nil {
		return fmt.Errorf("%s already holds a repository; use keys rotate", *dir)
	}
	rk, err := genKeys(release.RoleRoot, *count)
	if err != nil {
		return err
	}
	tk, err := genKeys(release.RoleTargets, *count)
	if err != nil {
		return err
	}
	ok, err := genKeys(release.RoleOnline, 1)
	if err != nil {
		return err
	}
	repo, err := release.Init(release.RootKeys{Root: rk, Targets: tk, Online: ok[0], Threshold: *threshold}, now, release.DefaultExpiry)
	if err != nil {
		return err
	}
	if err := writeKeys(d.keys(), append(rk, tk...)...); err != nil {
		return err
	}
	if err := writeKeys(d.online(), ok...); err != nil {
		return err
	}
	if err := repo.WriteDir(d.repo()); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "root v1: %d-of-%d root keys, %d-of-%d targets keys, online key %s\n", *threshold, *count, *threshold, *count, ok[0].ID()[:16])
	fmt.Fprintf(env.Stdout, "keys in %s (keep offline), online key in %s (copy to the server), metadata in %s\n", d.keys(), d.online(), d.repo())
	return nil
}

func keysRotate(env Env, args []string, now time.Time) error {
	fs := subFlags("keys rotate")
	dir := fs.String("dir", "", "folder made by keys generate (required)")
	threshold := fs.Int("threshold", 0, "new threshold (default: unchanged)")
	count := fs.Int("count", 0, "new keys per rotated role (default: as many as now)")
	roles := fs.String("roles", "root,targets", "roles to give new keys: root, targets, online")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: keys rotate -dir D [-roles root,targets,online] [-threshold T] [-count N]", errUsage)
	}
	d := keyDir(*dir)
	repo, err := release.OpenDir(d.repo())
	if err != nil {
		return err
	}
	root, err := repo.Root()
	if err != nil {
		return err
	}
	cur := release.RootKeys{Threshold: root.Signed.Roles["root"].Threshold}
	if cur.Root, err = release.ReadKeys(d.keys(), release.RoleRoot); err != nil {
		return err
	}
	if cur.Targets, err = release.ReadKeys(d.keys(), release.RoleTargets); err != nil {
		return err
	}
	online, err := release.ReadKeys(d.online(), release.RoleOnline)
	if err != nil || len(online) != 1 {
		return fmt.Errorf("want exactly one online key in %s: %v", d.online(), err)
	}
	cur.Online = online[0]
	next := cur
	if *threshold > 0 {
		next.Threshold = *threshold
	}
	var replaced []*release.Key
	for _, role := range strings.Split(*roles, ",") {
		switch role {
		case release.RoleRoot, release.RoleTargets:
			n := *count
			if n == 0 {
				n = len(cur.Root)
			}
			ks, err := genKeys(role, n)
			if err != nil {
				return err
			}
			if role == release.RoleRoot {
				replaced, next.Root = append(replaced, cur.Root...), ks
			} else {
				replaced, next.Targets = append(replaced, cur.Targets...), ks
			}
		case release.RoleOnline:
			ks, err := genKeys(role, 1)
			if err != nil {
				return err
			}
			replaced, next.Online = append(replaced, cur.Online), ks[0]
		default:
			return fmt.Errorf("%w: unknown role %q", errUsage, role)
		}
	}
	if err := repo.Rotate(cur.Root, next, now, release.DefaultExpiry); err != nil {
		return err
	}
	// New keys first, then the metadata, then retire the old keys: a crash
	// at any point leaves every key a repository version needs on disk.
	if err := writeKeys(d.keys(), append(next.Root, next.Targets...)...); err != nil {
		return err
	}
	if err := writeKeys(d.online(), next.Online); err != nil {
		return err
	}
	if err := repo.WriteDir(d.repo()); err != nil {
		return err
	}
	if err := retire(d, replaced, next); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "root v%d written to %s (cross-signed by the old and new root keys); old keys moved to %s\n", len(repo.Roots), d.repo(), d.retired())
	return nil
}

func retire(d keyDir, old []*release.Key, keep release.RootKeys) error {
	keepIDs := map[string]bool{keep.Online.ID(): true}
	for _, k := range append(keep.Root, keep.Targets...) {
		keepIDs[k.ID()] = true
	}
	if err := os.MkdirAll(d.retired(), 0o700); err != nil {
		return err
	}
	for _, k := range old {
		if keepIDs[k.ID()] {
			continue
		}
		name := k.Role + "-" + k.ID()[:16] + ".pem"
		from := filepath.Join(d.keys(), name)
		if k.Role == release.RoleOnline {
			from = filepath.Join(d.online(), name)
		}
		if err := os.Rename(from, filepath.Join(d.retired(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

func releaseAdd(env Env, args []string, now time.Time) error {
	fs := subFlags("release add")
	dir := fs.String("keys", "", "folder made by keys generate (required)")
	model := fs.String("model", "", "model name (required)")
	counter := fs.Uint64("counter", 0, "release counter, above every earlier one for the model (required)")
	version := fs.String("version", "", "display version")
	kind := fs.String("kind", "model", "model or agent")
	hw := fs.String("hardware", "", "comma-separated hardware ids (empty: any)")
	path := fs.String("path", "", "target path (default bundles/<model>/<counter>.manifest)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || *model == "" || *counter == 0 || len(pos) != 1 {
		return fmt.Errorf("%w: release add -keys D -model M -counter N [-version V] [-hardware a,b] MANIFEST", errUsage)
	}
	manifest, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	d := keyDir(*dir)
	repo, err := release.OpenDir(d.repo())
	if err != nil {
		return err
	}
	tk, err := release.ReadKeys(d.keys(), release.RoleTargets)
	if err != nil {
		return err
	}
	if *path == "" {
		*path = release.TargetPath(*model, *counter)
	}
	var hws []string
	if *hw != "" {
		hws = strings.Split(*hw, ",")
	}
	tf, err := repo.AddTarget(*path, manifest, release.ReleaseCustom{Model: *model, ReleaseCounter: *counter, Version: *version, Kind: *kind, HardwareIDs: hws}, tk, now, release.DefaultExpiry)
	if err != nil {
		return err
	}
	if err := repo.WriteDir(d.repo()); err != nil {
		return err
	}
	t, _ := repo.TargetsMeta()
	fmt.Fprintf(env.Stdout, "released %s (%d bytes, sha256 %x) in targets v%d; upload %s to the server\n", tf.Path, tf.Length, []byte(tf.Hashes["sha256"]), t.Signed.Version, d.repo())
	return nil
}
