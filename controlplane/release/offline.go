package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Expiry is how long each role's metadata stays valid after signing.
type Expiry struct {
	Root, Targets, Snapshot, Timestamp time.Duration
}

// DefaultExpiry: offline roles last long, online ones are re-signed often so
// that a frozen (withheld) update is noticed within a day.
var DefaultExpiry = Expiry{Root: 365 * 24 * time.Hour, Targets: 90 * 24 * time.Hour, Snapshot: 7 * 24 * time.Hour, Timestamp: 24 * time.Hour}

// RootKeys are the keys a root version names. Threshold applies to root and
// targets; the online key signs snapshot and timestamp alone.
type RootKeys struct {
	Root, Targets []*Key
	Online        *Key
	Threshold     int
}

func (k RootKeys) check() error {
	if k.Threshold < 1 {
		return fmt.Errorf("threshold %d: must be at least 1", k.Threshold)
	}
	if len(k.Root) < k.Threshold || len(k.Targets) < k.Threshold {
		return fmt.Errorf("threshold %d needs at least that many root and targets keys (have %d and %d)", k.Threshold, len(k.Root), len(k.Targets))
	}
	if k.Online == nil {
		return errors.New("no online key")
	}
	for _, set := range [][]*Key{k.Root, k.Targets, {k.Online}} {
		for _, key := range set {
			if key == nil {
				return errors.New("nil key")
			}
		}
	}
	return nil
}

func buildRoot(k RootKeys, version int64, expires time.Time) (*metadata.Metadata[metadata.RootType], error) {
	root := metadata.Root(expires.UTC().Truncate(time.Second))
	root.Signed.Version = version
	add := func(keys []*Key, role string) error {
		for _, key := range keys {
			if err := root.Signed.AddKey(key.TUF(), role); err != nil {
				return fmt.Errorf("add %s key: %w", role, err)
			}
		}
		return nil
	}
	for _, step := range []struct {
		keys []*Key
		role string
	}{{k.Root, metadata.ROOT}, {k.Targets, metadata.TARGETS}, {[]*Key{k.Online}, metadata.SNAPSHOT}, {[]*Key{k.Online}, metadata.TIMESTAMP}} {
		if err := add(step.keys, step.role); err != nil {
			return nil, err
		}
	}
	root.Signed.Roles[metadata.ROOT].Threshold = k.Threshold
	root.Signed.Roles[metadata.TARGETS].Threshold = k.Threshold
	return root, nil
}

// sign replaces md's signatures with one per distinct key.
func sign[T metadata.Roles](md *metadata.Metadata[T], keys ...[]*Key) error {
	md.ClearSignatures()
	seen := map[string]bool{}
	for _, set := range keys {
		for _, k := range set {
			if seen[k.ID()] {
				continue
			}
			seen[k.ID()] = true
			if _, err := md.Sign(k.signer()); err != nil {
				return fmt.Errorf("sign: %w", err)
			}
		}
	}
	return nil
}

// Init makes a new repository: root version 1 signed by every root key and
// an empty targets.json signed by every targets key.
func Init(k RootKeys, now time.Time, exp Expiry) (*Repository, error) {
	if err := k.check(); err != nil {
		return nil, fmt.Errorf("init repository: %w", err)
	}
	root, err := buildRoot(k, 1, now.Add(exp.Root))
	if err != nil {
		return nil, err
	}
	if err := sign(root, k.Root); err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return nil, fmt.Errorf("init repository: root does not verify: %w", err)
	}
	rb, err := root.ToBytes(true)
	if err != nil {
		return nil, err
	}
	targets := metadata.Targets(now.Add(exp.Targets).UTC().Truncate(time.Second))
	tb, err := signTargets(root, targets, k.Targets)
	if err != nil {
		return nil, err
	}
	return &Repository{Roots: [][]byte{rb}, Targets: tb}, nil
}

func signTargets(root *metadata.Metadata[metadata.RootType], t *metadata.Metadata[metadata.TargetsType], keys []*Key) ([]byte, error) {
	if err := sign(t, keys); err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(metadata.TARGETS, t); err != nil {
		return nil, fmt.Errorf("targets not signed by the root's targets keys (%s): %w", keyIDs(keys), err)
	}
	return t.ToBytes(true)
}

// Rotate appends root version N+1 naming k, signed by oldRoot (at least
// the old root threshold) and by k.Root (the new threshold), so devices
// holding version N accept it. If the targets keys change, targets.json is
// re-signed by k.Targets under a new version. The server must then
// Publish (with k.Online): snapshot and timestamp that no longer verify
// under the new root are re-signed, their versions continuing.
func (r *Repository) Rotate(oldRoot []*Key, k RootKeys, now time.Time, exp Expiry) error {
	if err := k.check(); err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	old, err := r.Root()
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	root, err := buildRoot(k, old.Signed.Version+1, now.Add(exp.Root))
	if err != nil {
		return err
	}
	if err := sign(root, oldRoot, k.Root); err != nil {
		return err
	}
	if err := old.VerifyDelegate(metadata.ROOT, root); err != nil {
		return fmt.Errorf("rotate: new root not signed by the old root threshold (gave %s): %w", keyIDs(oldRoot), err)
	}
	if err := root.VerifyDelegate(metadata.ROOT, root); err != nil {
		return fmt.Errorf("rotate: new root not signed by its own threshold: %w", err)
	}
	rb, err := root.ToBytes(true)
	if err != nil {
		return err
	}
	targets, err := r.TargetsMeta()
	if err != nil {
		return err
	}
	tb := r.Targets
	if !sameIDs(old.Signed.Roles[metadata.TARGETS].KeyIDs, root.Signed.Roles[metadata.TARGETS].KeyIDs) ||
		old.Signed.Roles[metadata.TARGETS].Threshold != k.Threshold {
		targets.Signed.Version++
		targets.Signed.Expires = now.Add(exp.Targets).UTC().Truncate(time.Second)
		if tb, err = signTargets(root, targets, k.Targets); err != nil {
			return fmt.Errorf("rotate: %w", err)
		}
	}
	r.Roots = append(r.Roots, rb)
	r.Targets = tb
	return nil
}

func sameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// ReleaseCustom is the custom metadata of a manifest target in the release
// repository. agent/trust reads the same JSON.
type ReleaseCustom struct {
	Model          string   `json:"model"`
	ReleaseCounter uint64   `json:"release_counter"`
	Version        string   `json:"version,omitempty"`
	Kind           string   `json:"kind,omitempty"`
	HardwareIDs    []string `json:"hardware_ids,omitempty"`
}

// TargetPath is the conventional target path of a manifest.
func TargetPath(model string, counter uint64) string {
	return fmt.Sprintf("bundles/%s/%d.manifest", model, counter)
}

// ValidTargetPath reports whether p is a clean relative slash path.
func ValidTargetPath(p string) error {
	if p == "" || len(p) > 512 || strings.HasPrefix(p, "/") || path.Clean(p) != p || p == "." ||
		strings.HasPrefix(p, "../") || strings.Contains(p, "\\") {
		return fmt.Errorf("target path %q: want a clean relative path", p)
	}
	return nil
}

// AddTarget releases manifest under path: targets.json gets the entry
// (length, sha256, custom), a new version and expiry, and is re-signed by
// targetsKeys, which must meet the root's targets threshold. A release is
// immutable: an existing path with other bytes, a reused or lower release
// counter for the model are refused.
func (r *Repository) AddTarget(path string, manifest []byte, c ReleaseCustom, targetsKeys []*Key, now time.Time, exp Expiry) (*metadata.TargetFiles, error) {
	if err := ValidTargetPath(path); err != nil {
		return nil, err
	}
	if c.Model == "" || c.ReleaseCounter == 0 {
		return nil, errors.New("add target: model and a release counter > 0 are required")
	}
	root, err := r.Root()
	if err != nil {
		return nil, err
	}
	targets, err := r.TargetsMeta()
	if err != nil {
		return nil, err
	}
	tf, err := metadata.TargetFile().FromBytes(path, manifest, "sha256")
	if err != nil {
		return nil, fmt.Errorf("add target: %w", err)
	}
	if prev, ok := targets.Signed.Targets[path]; ok && !(prev.Length == tf.Length && prev.Hashes.Equal(tf.Hashes)) {
		return nil, fmt.Errorf("add target: %s is already released with other content", path)
	}
	for p, t := range targets.Signed.Targets {
		var pc ReleaseCustom
		if t.Custom == nil || json.Unmarshal(*t.Custom, &pc) != nil || pc.Model != c.Model || p == path {
			continue
		}
		if pc.ReleaseCounter >= c.ReleaseCounter {
			return nil, fmt.Errorf("add target: model %s already has release counter %d (%s); devices refuse lower or equal counters", c.Model, pc.ReleaseCounter, p)
		}
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	msg := json.RawMessage(raw)
	tf.Custom = &msg
	targets.Signed.Targets[path] = tf
	targets.Signed.Version++
	targets.Signed.Expires = now.Add(exp.Targets).UTC().Truncate(time.Second)
	tb, err := signTargets(root, targets, targetsKeys)
	if err != nil {
		return nil, fmt.Errorf("add target: %w", err)
	}
	r.Targets = tb
	return tf, nil
}

// RenewTargets re-signs targets.json unchanged under a new version and
// expiry.
func (r *Repository) RenewTargets(targetsKeys []*Key, now time.Time, exp Expiry) error {
	root, err := r.Root()
	if err != nil {
		return err
	}
	targets, err := r.TargetsMeta()
	if err != nil {
		return err
	}
	targets.Signed.Version++
	targets.Signed.Expires = now.Add(exp.Targets).UTC().Truncate(time.Second)
	tb, err := signTargets(root, targets, targetsKeys)
	if err != nil {
		return fmt.Errorf("renew targets: %w", err)
	}
	r.Targets = tb
	return nil
}
