package trust

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"github.com/theupdateframework/go-tuf/v2/metadata/config"
	"github.com/theupdateframework/go-tuf/v2/metadata/updater"
)

// issuedField is the signed timestamp field with the server's signing
// time (controlplane/release.IssuedField).
const issuedField = "x-flotilla-issued"

// repoResult is one repository after a successful refresh.
type repoResult struct {
	files     map[string][]byte // trusted files to persist: root, timestamp, snapshot, targets
	targets   map[string]*metadata.TargetFiles
	issued    time.Time // zero when the timestamp carries none
	tsExpires time.Time
}

// refresh runs go-tuf's updater for one repository: trusted state from
// our durable store (seeded into a scratch cache the updater reads),
// new files from supplied, expiry judged at ref. Nothing durable is
// written here.
func refresh(repo, scratchParent string, trusted, supplied map[string][]byte, ref time.Time, l Limits) (*repoResult, error) {
	scratch, err := os.MkdirTemp(scratchParent, ".tuf-"+repo+"-")
	if err != nil {
		return nil, fmt.Errorf("%s: scratch: %w", repo, err)
	}
	defer os.RemoveAll(scratch)
	for _, name := range []string{fileTimestamp, fileSnapshot, fileTargets} {
		if b, ok := trusted[name]; ok {
			if err := os.WriteFile(filepath.Join(scratch, name), b, 0o600); err != nil {
				return nil, fmt.Errorf("%s: scratch: %w", repo, err)
			}
		}
	}
	f := newMemFetcher(supplied, l)
	cfg, err := config.New(baseURL, trusted[fileRoot])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", repo, err)
	}
	cfg.Fetcher = f
	cfg.LocalMetadataDir = scratch
	cfg.LocalTargetsDir = filepath.Join(scratch, "targets")
	cfg.MaxRootRotations = int64(l.Files)
	cfg.MaxDelegations = 0
	cfg.RootMaxLength, cfg.TimestampMaxLength, cfg.SnapshotMaxLength, cfg.TargetsMaxLength = l.Root, l.Timestamp, l.Snapshot, l.Targets
	up, err := updater.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: trusted root: %w: %w", repo, ErrMalformed, err)
	}
	up.UnsafeSetRefTime(ref)
	if err := up.Refresh(); err != nil {
		return nil, fmt.Errorf("%s: %w", repo, classify(err, f, up, trusted, supplied))
	}
	res := &repoResult{files: map[string][]byte{}}
	for _, name := range []string{fileRoot, fileTimestamp, fileSnapshot, fileTargets} {
		b, err := os.ReadFile(filepath.Join(scratch, name))
		if err != nil {
			return nil, fmt.Errorf("%s: read back %s: %w", repo, name, err)
		}
		res.files[name] = b
	}
	tm := up.GetTrustedMetadataSet()
	res.targets = tm.Targets[metadata.TARGETS].Signed.Targets
	res.tsExpires = tm.Timestamp.Signed.Expires
	if s, ok := tm.Timestamp.Signed.UnrecognizedFields[issuedField].(string); ok {
		if t, err := time.Parse(time.RFC3339, s); err == nil && !t.After(res.tsExpires) {
			res.issued = t
		}
	}
	return res, nil
}

// classify maps go-tuf's refusal to one of our sentinels, keeping its text.
func classify(err error, f *memFetcher, up *updater.Updater, trusted, supplied map[string][]byte) error {
	var httpErr *metadata.ErrDownloadHTTP
	var valErr *metadata.ErrValue
	switch {
	case errors.As(err, &httpErr):
		return fmt.Errorf("%w: %w", ErrMissingMetadata, err)
	case errors.Is(err, &metadata.ErrDownloadLengthMismatch{}):
		return fmt.Errorf("%w: %w", ErrTooLarge, err)
	case errors.Is(err, &metadata.ErrExpiredMetadata{}):
		return fmt.Errorf("%w: %w", ErrExpired, err)
	case errors.Is(err, &metadata.ErrUnsignedMetadata{}):
		return fmt.Errorf("%w: %w", explainSignatures(f.lastName, f.lastData, up.GetTrustedMetadataSet().Root), err)
	case errors.Is(err, &metadata.ErrBadVersionNumber{}):
		if rolledBack(trusted, supplied) {
			return fmt.Errorf("%w: %w", ErrMetadataRollback, err)
		}
		return fmt.Errorf("%w: %w", ErrMixAndMatch, err)
	case errors.Is(err, &metadata.ErrLengthOrHashMismatch{}):
		return fmt.Errorf("%w: %w", ErrMixAndMatch, err)
	case errors.As(err, &valErr) && len(valErr.Msg) > 0 && containsFold(valErr.Msg, "multiple signatures"):
		return fmt.Errorf("%w: %w", ErrDuplicateSignature, err)
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// rolledBack reports whether any supplied role is older than the trusted
// one (a replay), as opposed to roles that disagree with each other.
func rolledBack(trusted, supplied map[string][]byte) bool {
	for _, name := range []string{fileTimestamp, fileSnapshot, fileTargets} {
		t, err1 := peek(trusted[name])
		s, err2 := peek(supplied[name])
		if err1 == nil && err2 == nil && s.Signed.Version < t.Signed.Version {
			return true
		}
	}
	t, err1 := peek(trusted[fileTimestamp])
	s, err2 := peek(supplied[fileTimestamp])
	return err1 == nil && err2 == nil && s.Signed.Meta[fileSnapshot].Version < t.Signed.Meta[fileSnapshot].Version
}
