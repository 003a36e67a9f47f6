package flotctl

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// flotctl bundle rerelease MODEL COUNTER -keys D -store S [-counter N] [-version V]
//
// Devices never install a lower release counter than they run, so a fleet
// that must go back to an old model after the other slot is gone gets the
// old content again under a new counter. Offline, like release add: the
// released manifest of MODEL at COUNTER (found in D/repo/targets.json, its
// bytes in the store S and checked against the signed length and sha256)
// is copied with only its release counter (and, with -version, its display
// version) changed, stored in S, and released under the new counter (by
// default one above the model's highest) with the old target's kind and
// hardware ids. Every file and chunk is the old one's, so devices that kept
// the chunks fetch nothing but the manifest, and bundle push uploads only
// the manifest to a server that kept them.

type rereleaseResult struct {
	Model      string `json:"model"`
	From       uint64 `json:"from_release"`
	FromDigest string `json:"from_digest"`
	Release    uint64 `json:"release"`
	Version    string `json:"version"`
	Digest     string `json:"digest"`
	Target     string `json:"target"`
	Store      string `json:"store"`
	// MissingChunks counts chunks of the bundle the local store lacks:
	// bundle push needs them unless the server kept them.
	MissingChunks int `json:"missing_chunks"`
}

func bundleRerelease(o out, args []string, now time.Time) error {
	fs := subFlags("bundle rerelease")
	keys := fs.String("keys", "", "folder made by keys generate (required)")
	store := fs.String("store", "", "bundle store holding the old manifest (required; new manifest written here)")
	counter := fs.Uint64("counter", 0, "new release counter (default: one above the model's highest)")
	version := fs.String("version", "", "display version of the new release (default: the old one's)")
	path := fs.String("path", "", "target path (default bundles/<model>/<counter>.manifest)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	usageErr := fmt.Errorf("%w: bundle rerelease MODEL COUNTER -keys D -store S [-counter N] [-version V]", errUsage)
	if *keys == "" || *store == "" || len(pos) != 2 {
		return usageErr
	}
	model := pos[0]
	from, err := strconv.ParseUint(pos[1], 10, 64)
	if err != nil || from == 0 {
		return usageErr
	}
	d := keyDir(*keys)
	repo, err := release.OpenDir(d.repo())
	if err != nil {
		return err
	}
	tm, err := repo.TargetsMeta()
	if err != nil {
		return err
	}
	var old release.ReleaseCustom
	var oldLen int64
	var oldDigest string
	highest := uint64(0)
	for _, tf := range tm.Signed.Targets {
		var c release.ReleaseCustom
		if tf.Custom == nil || json.Unmarshal(*tf.Custom, &c) != nil || c.Model != model {
			continue
		}
		highest = max(highest, c.ReleaseCounter)
		if c.ReleaseCounter == from {
			old, oldLen, oldDigest = c, tf.Length, hex.EncodeToString(tf.Hashes["sha256"])
		}
	}
	if oldDigest == "" {
		return fmt.Errorf("model %s has no release %d in %s", model, from, d.repo())
	}
	if *counter == 0 {
		*counter = highest + 1
	}
	if *counter <= highest {
		return fmt.Errorf("%w: -counter %d: model %s already has release %d; devices refuse lower or equal counters", errUsage, *counter, model, highest)
	}
	s, err := bundle.OpenStore(*store)
	if err != nil {
		return err
	}
	raw, m, err := s.Manifest(oldDigest)
	if errors.Is(err, bundle.ErrNotFound) {
		return fmt.Errorf("the manifest of %s release %d (%s) is not in %s: build the same folder again into it (same folder, same digest)", model, from, oldDigest[:16], *store)
	}
	if err != nil {
		return err
	}
	if int64(len(raw)) != oldLen {
		return fmt.Errorf("manifest %s is %d bytes; the release signed %d", oldDigest[:16], len(raw), oldLen)
	}
	next := proto.Clone(m).(*pb.BundleManifest)
	next.Release = *counter
	if *version != "" {
		next.Version = *version
	}
	if err := next.Validate(); err != nil {
		return fmt.Errorf("re-released manifest: %w", err)
	}
	nraw, err := wire.Encode(next)
	if err != nil {
		return err
	}
	digest, err := s.PutManifest(nraw)
	if err != nil {
		return err
	}
	tk, err := release.ReadKeys(d.keys(), release.RoleTargets)
	if err != nil {
		return err
	}
	if *path == "" {
		*path = release.TargetPath(model, *counter)
	}
	custom := release.ReleaseCustom{Model: model, ReleaseCounter: *counter, Version: next.GetVersion(), Kind: old.Kind, HardwareIDs: old.HardwareIDs}
	if _, err := repo.AddTarget(*path, nraw, custom, tk, now, release.DefaultExpiry); err != nil {
		return err
	}
	if err := repo.WriteDir(d.repo()); err != nil {
		return err
	}
	res := rereleaseResult{Model: model, From: from, FromDigest: oldDigest, Release: *counter, Version: next.GetVersion(),
		Digest: digest, Target: *path, Store: s.Dir()}
	for _, f := range next.GetFiles() {
		for _, c := range f.GetChunks() {
			if !s.HasChunk([32]byte(c.GetSha256())) {
				res.MissingChunks++
			}
		}
	}
	return o.print(res, func(tw io.Writer) {
		fmt.Fprintf(tw, "re-released %s release %d (%s) as release %d\n", model, from, oldDigest[:16], *counter)
		fmt.Fprintf(tw, "digest\t%s\ntarget\t%s\nversion\t%s\nstore\t%s\n", digest, *path, next.GetVersion(), s.Dir())
		if res.MissingChunks > 0 {
			fmt.Fprintf(tw, "note\tthe store lacks %d chunks: bundle push works only if the server kept them\n", res.MissingChunks)
		}
		fmt.Fprintf(tw, "next\tflotctl release push -keys %s; flotctl bundle push -store %s %s\n", *keys, *store, digest)
	})
}
