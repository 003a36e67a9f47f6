package trust

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Limits caps each metadata file and the whole set, before any parsing.
type Limits struct {
	Root, Timestamp, Snapshot, Targets int64
	Files                              int // files per repository
}

// DefaultLimits fit a ReleaseMetadata message (1 MiB) with room to spare.
var DefaultLimits = Limits{Root: 64 << 10, Timestamp: 16 << 10, Snapshot: 64 << 10, Targets: 768 << 10, Files: 40}

const (
	fileRoot      = "root.json"
	fileTimestamp = "timestamp.json"
	fileSnapshot  = "snapshot.json"
	fileTargets   = "targets.json"
)

// roleOf maps a metadata file name to its role and, for "<v>.root.json",
// its version (0 otherwise).
func roleOf(name string) (role string, version int64, ok bool) {
	switch name {
	case fileRoot, fileTimestamp, fileSnapshot, fileTargets:
		return strings.TrimSuffix(name, ".json"), 0, true
	}
	vs, ok := strings.CutSuffix(name, ".root.json")
	if !ok {
		return "", 0, false
	}
	v, err := strconv.ParseInt(vs, 10, 64)
	if err != nil || v < 1 || strconv.FormatInt(v, 10) != vs {
		return "", 0, false
	}
	return "root", v, true
}

func (l Limits) of(role string) int64 {
	switch role {
	case "root":
		return l.Root
	case "timestamp":
		return l.Timestamp
	case "snapshot":
		return l.Snapshot
	}
	return l.Targets
}

// checkFiles validates names and sizes of one repository's files, the
// entry point for everything that arrives from the network.
func checkFiles(repo string, md map[string][]byte, l Limits) error {
	if len(md) > l.Files {
		return fmt.Errorf("%s: %d files, limit %d: %w", repo, len(md), l.Files, ErrTooLarge)
	}
	for name, b := range md {
		role, _, ok := roleOf(name)
		if !ok {
			return fmt.Errorf("%s: unexpected file %q: %w", repo, name, ErrMalformed)
		}
		if int64(len(b)) > l.of(role) {
			return fmt.Errorf("%s: %s is %d bytes, limit %d: %w", repo, name, len(b), l.of(role), ErrTooLarge)
		}
	}
	return nil
}

// envelope is the unverified outline of a metadata file, for indexing and
// for explaining a refusal; nothing is trusted from it.
type envelope struct {
	Signatures []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
	Signed struct {
		Type    string `json:"_type"`
		Version int64  `json:"version"`
		Meta    map[string]struct {
			Version int64 `json:"version"`
		} `json:"meta"`
	} `json:"signed"`
}

func peek(b []byte) (envelope, error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return e, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return e, nil
}
