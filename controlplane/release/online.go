package release

import (
	"crypto/sha256"
	"fmt"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// IssuedField is a signed field of timestamp.json carrying the time the
// server signed it (RFC 3339). Devices keep the latest one they verified as
// a floor under their clock (agent/trust).
const IssuedField = "x-flotilla-issued"

// Publish re-signs snapshot.json and timestamp.json with the online key
// where needed: snapshot when targets.json changed, when it does not
// verify under the newest root (a key rotation) or when half its lifetime
// has passed; timestamp when the snapshot changed or half its lifetime has
// passed. It reports whether anything changed.
func (r *Repository) Publish(online *Key, now time.Time, exp Expiry) (bool, error) {
	root, err := r.Root()
	if err != nil {
		return false, fmt.Errorf("publish: %w", err)
	}
	targets, err := r.TargetsMeta()
	if err != nil {
		return false, fmt.Errorf("publish: %w", err)
	}
	if err := root.VerifyDelegate(metadata.TARGETS, targets); err != nil {
		return false, fmt.Errorf("publish: targets.json does not verify under root v%d: %w", root.Signed.Version, err)
	}
	snapChanged := false
	snap, err := metadata.Snapshot().FromBytes(r.Snapshot)
	if len(r.Snapshot) == 0 || err != nil || root.VerifyDelegate(metadata.SNAPSHOT, snap) != nil ||
		metaStale(snap.Signed.Meta[FileTargets], r.Targets, targets.Signed.Version) ||
		halfGone(now, snap.Signed.Expires, exp.Snapshot) {
		version := int64(1)
		if err == nil && len(r.Snapshot) > 0 {
			version = snap.Signed.Version + 1
		}
		snap = metadata.Snapshot(now.Add(exp.Snapshot).UTC().Truncate(time.Second))
		snap.Signed.Version = version
		snap.Signed.Meta[FileTargets] = metaFile(targets.Signed.Version, r.Targets)
		b, err := signOnline(root, snap, metadata.SNAPSHOT, online)
		if err != nil {
			return false, err
		}
		r.Snapshot, snapChanged = b, true
	}
	ts, err := metadata.Timestamp().FromBytes(r.Timestamp)
	if !snapChanged && len(r.Timestamp) > 0 && err == nil && root.VerifyDelegate(metadata.TIMESTAMP, ts) == nil &&
		!halfGone(now, ts.Signed.Expires, exp.Timestamp) {
		return false, nil
	}
	version := int64(1)
	if err == nil && len(r.Timestamp) > 0 {
		version = ts.Signed.Version + 1
	}
	ts = newTimestamp(now, exp.Timestamp, version, snap.Signed.Version, r.Snapshot)
	b, err := signOnline(root, ts, metadata.TIMESTAMP, online)
	if err != nil {
		return false, err
	}
	r.Timestamp = b
	return true, nil
}

func newTimestamp(now time.Time, life time.Duration, version, snapVersion int64, snapshot []byte) *metadata.Metadata[metadata.TimestampType] {
	ts := metadata.Timestamp(now.Add(life).UTC().Truncate(time.Second))
	ts.Signed.Version = version
	ts.Signed.Meta[FileSnapshot] = metaFile(snapVersion, snapshot)
	ts.Signed.UnrecognizedFields = map[string]any{IssuedField: now.UTC().Truncate(time.Second).Format(time.RFC3339)}
	return ts
}

func metaFile(version int64, b []byte) *metadata.MetaFiles {
	sum := sha256.Sum256(b)
	m := metadata.MetaFile(version)
	m.Length = int64(len(b))
	m.Hashes = metadata.Hashes{"sha256": sum[:]}
	return m
}

func metaStale(m *metadata.MetaFiles, b []byte, version int64) bool {
	return m == nil || m.Version != version || m.VerifyLengthHashes(b) != nil
}

func halfGone(now, expires time.Time, life time.Duration) bool {
	return now.Add(life / 2).After(expires)
}

func signOnline[T metadata.Roles](root *metadata.Metadata[metadata.RootType], md *metadata.Metadata[T], role string, online *Key) ([]byte, error) {
	if online == nil {
		return nil, fmt.Errorf("publish %s: no online key", role)
	}
	if err := sign(md, []*Key{online}); err != nil {
		return nil, err
	}
	if err := root.VerifyDelegate(role, md); err != nil {
		return nil, fmt.Errorf("publish %s: the online key %s is not the root's %s key: %w", role, online.ID()[:16], role, err)
	}
	return md.ToBytes(true)
}
