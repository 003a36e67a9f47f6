package trust

import (
	"encoding/hex"
	"slices"
	"strings"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// explainSignatures says why go-tuf found too few signatures on data (the
// file named name), judged against delegator (the trusted root at the time)
// and, for a new root, against itself. go-tuf remains the judge; this only
// names the reason: a signature that does not verify, a key the root does
// not name, two signatures by one key, or simply too few.
func explainSignatures(name string, data []byte, delegator *metadata.Metadata[metadata.RootType]) error {
	role, _, ok := roleOf(name)
	if !ok || delegator == nil {
		return ErrBelowThreshold
	}
	e, err := peek(data)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, s := range e.Signatures {
		if seen[s.KeyID] {
			return ErrDuplicateSignature
		}
		seen[s.KeyID] = true
	}
	roots := []*metadata.Metadata[metadata.RootType]{delegator}
	if role == metadata.ROOT {
		if self, err := metadata.Root().FromBytes(data); err == nil {
			roots = append(roots, self)
		}
	}
	for _, r := range roots {
		if why := judge(role, data, e, r); why != nil {
			return why
		}
	}
	return ErrBelowThreshold
}

// judge returns nil when r's threshold for role is met by e's signatures,
// otherwise the most specific reason it is not.
func judge(role string, data []byte, e envelope, r *metadata.Metadata[metadata.RootType]) error {
	rr := r.Signed.Roles[role]
	if rr == nil {
		return ErrUnknownKey
	}
	var bad, unknown int
	dupKey := false
	counted := map[string]bool{}
	for _, s := range e.Signatures {
		if !slices.Contains(rr.KeyIDs, s.KeyID) {
			unknown++
			continue
		}
		key := r.Signed.Keys[s.KeyID]
		sig, err := hex.DecodeString(s.Sig)
		if key == nil || err != nil || !verifiesAlone(role, data, s.KeyID, key, sig) {
			bad++
			continue
		}
		pub := key.Type + ":" + strings.ToLower(key.Value.PublicKey)
		if counted[pub] {
			dupKey = true
		}
		counted[pub] = true
	}
	switch {
	case len(counted) >= rr.Threshold:
		return nil
	case bad > 0:
		return ErrBadSignature
	case dupKey:
		return ErrDuplicateSignature
	case unknown > 0:
		return ErrUnknownKey
	}
	return ErrBelowThreshold
}

// verifiesAlone asks go-tuf whether one signature by one key verifies data,
// through a throwaway root naming only that key with threshold 1.
func verifiesAlone(role string, data []byte, keyID string, key *metadata.Key, sig []byte) bool {
	r := metadata.Root()
	r.Signed.Keys = map[string]*metadata.Key{keyID: key}
	r.Signed.Roles[role] = &metadata.Role{KeyIDs: []string{keyID}, Threshold: 1}
	one := []metadata.Signature{{KeyID: keyID, Signature: sig}}
	switch role {
	case metadata.ROOT:
		return verifyOne(r, role, data, new(metadata.Metadata[metadata.RootType]), one)
	case metadata.TIMESTAMP:
		return verifyOne(r, role, data, new(metadata.Metadata[metadata.TimestampType]), one)
	case metadata.SNAPSHOT:
		return verifyOne(r, role, data, new(metadata.Metadata[metadata.SnapshotType]), one)
	case metadata.TARGETS:
		return verifyOne(r, role, data, new(metadata.Metadata[metadata.TargetsType]), one)
	}
	return false
}

func verifyOne[T metadata.Roles](r *metadata.Metadata[metadata.RootType], role string, data []byte, m *metadata.Metadata[T], sigs []metadata.Signature) bool {
	m, err := m.FromBytes(data)
	if err != nil {
		return false
	}
	m.Signatures = sigs
	return r.VerifyDelegate(role, m) == nil
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
