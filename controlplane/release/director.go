package release

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// DefaultDirectorExpiry is how long a device's director metadata stays
// valid: the server re-signs desired states before that.
const DefaultDirectorExpiry = 7 * 24 * time.Hour

// Director is the Uptane director repository: the control plane's online
// key signs, per device, targets metadata naming the manifest it should
// run. Its root names that key for every role (threshold 1) and is
// provisioned to each device at enrolment.
type Director struct {
	key   *Key
	roots [][]byte
}

// NewDirector makes a director with root version 1 for key.
func NewDirector(key *Key, now time.Time, rootLife time.Duration) (*Director, error) {
	if key == nil {
		return nil, errors.New("new director: no key")
	}
	root, err := directorRoot(key, 1, now.Add(rootLife))
	if err != nil {
		return nil, err
	}
	if err := sign(root, []*Key{key}); err != nil {
		return nil, err
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return nil, err
	}
	return &Director{key: key, roots: [][]byte{b}}, nil
}

// OpenDirector restores a director from its key and root versions (as
// Roots returned them); the newest root must name key.
func OpenDirector(key *Key, roots [][]byte) (*Director, error) {
	if key == nil || len(roots) == 0 {
		return nil, errors.New("open director: key and root required")
	}
	d := &Director{key: key, roots: roots}
	root, err := metadata.Root().FromBytes(roots[len(roots)-1])
	if err != nil {
		return nil, fmt.Errorf("open director: %w", err)
	}
	for _, role := range []string{metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if r := root.Signed.Roles[role]; r == nil || len(r.KeyIDs) != 1 || r.KeyIDs[0] != key.ID() {
			return nil, fmt.Errorf("open director: root v%d does not name key %s for %s", root.Signed.Version, key.ID()[:16], role)
		}
	}
	return d, nil
}

func directorRoot(key *Key, version int64, expires time.Time) (*metadata.Metadata[metadata.RootType], error) {
	root := metadata.Root(expires.UTC().Truncate(time.Second))
	root.Signed.Version = version
	for _, role := range []string{metadata.ROOT, metadata.TARGETS, metadata.SNAPSHOT, metadata.TIMESTAMP} {
		if err := root.Signed.AddKey(key.TUF(), role); err != nil {
			return nil, fmt.Errorf("director root: %w", err)
		}
	}
	return root, nil
}

// Root is the newest director root: what a device is provisioned with.
func (d *Director) Root() []byte { return clone(d.roots[len(d.roots)-1]) }

// Roots returns every root version, oldest first, for storage.
func (d *Director) Roots() [][]byte {
	out := make([][]byte, len(d.roots))
	for i, b := range d.roots {
		out[i] = clone(b)
	}
	return out
}

// Rotate moves the director to newKey: root N+1 signed by the old and the
// new key. Devices walk to it from the roots that Sign ships.
func (d *Director) Rotate(newKey *Key, now time.Time, rootLife time.Duration) error {
	root, err := directorRoot(newKey, int64(len(d.roots))+1, now.Add(rootLife))
	if err != nil {
		return err
	}
	if err := sign(root, []*Key{d.key, newKey}); err != nil {
		return err
	}
	b, err := root.ToBytes(true)
	if err != nil {
		return err
	}
	d.roots = append(d.roots, b)
	d.key = newKey
	return nil
}

// DirectorCustom is the custom metadata of a director target. agent/trust
// reads the same JSON.
type DirectorCustom struct {
	DeviceID   string `json:"device_id"`
	HardwareID string `json:"hardware_id,omitempty"`
}

// Assignment is what one device should run.
type Assignment struct {
	DeviceID   string
	HardwareID string // optional; the device refuses if it is not its own
	// Targets are entries of the release repository's targets.json (path,
	// length and hashes are copied; custom is replaced by DirectorCustom).
	Targets []*metadata.TargetFiles
	// Version must increase with every assignment to this device (use
	// DesiredState.revision): devices refuse lower versions.
	Version int64
	Expires time.Duration // 0 means DefaultDirectorExpiry
}

// Sign returns the device's director metadata, by file name: every root
// version, targets.json, snapshot.json and timestamp.json, ready for
// DesiredState.director_metadata.
func (d *Director) Sign(a Assignment, now time.Time) (map[string][]byte, error) {
	if a.DeviceID == "" || a.Version < 1 {
		return nil, errors.New("director: device id and a version > 0 are required")
	}
	life := a.Expires
	if life <= 0 {
		life = DefaultDirectorExpiry
	}
	expires := now.Add(life).UTC().Truncate(time.Second)
	root, err := metadata.Root().FromBytes(d.roots[len(d.roots)-1])
	if err != nil {
		return nil, err
	}
	custom, err := json.Marshal(DirectorCustom{DeviceID: a.DeviceID, HardwareID: a.HardwareID})
	if err != nil {
		return nil, err
	}
	targets := metadata.Targets(expires)
	targets.Signed.Version = a.Version
	for _, t := range a.Targets {
		if t == nil || ValidTargetPath(t.Path) != nil || t.Length <= 0 || len(t.Hashes["sha256"]) != 32 {
			return nil, fmt.Errorf("director: target %v: want a released target with a path, length and sha256", t)
		}
		msg := json.RawMessage(custom)
		targets.Signed.Targets[t.Path] = &metadata.TargetFiles{Path: t.Path, Length: t.Length, Hashes: t.Hashes, Custom: &msg}
	}
	r := &Repository{Roots: d.roots}
	if r.Targets, err = signOnline(root, targets, metadata.TARGETS, d.key); err != nil {
		return nil, err
	}
	snap := metadata.Snapshot(expires)
	snap.Signed.Version = a.Version
	snap.Signed.Meta[FileTargets] = metaFile(a.Version, r.Targets)
	if r.Snapshot, err = signOnline(root, snap, metadata.SNAPSHOT, d.key); err != nil {
		return nil, err
	}
	ts := newTimestamp(now, life, a.Version, a.Version, r.Snapshot)
	if r.Timestamp, err = signOnline(root, ts, metadata.TIMESTAMP, d.key); err != nil {
		return nil, err
	}
	return r.Metadata(), nil
}
