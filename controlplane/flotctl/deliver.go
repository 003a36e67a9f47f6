package flotctl

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// Commands that send what the operator made offline to the server, and
// the assignment and progress commands that follow:
//
//	flotctl release push -keys D            D/repo/: roots and targets.json
//	flotctl bundle push -store S DIGEST     the manifest and its missing chunks
//	flotctl devices assign DEVICE MODEL RELEASE
//	flotctl devices progress DEVICE [-watch]

// releasePush uploads the repository folder's root versions and targets.
func releasePush(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("release push")
	dir := fs.String("keys", "", "folder made by keys generate (required)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: release push -keys D", errUsage)
	}
	repo, err := release.OpenDir(keyDir(*dir).repo())
	if err != nil {
		return err
	}
	files := map[string][]byte{release.FileTargets: repo.Targets}
	for i, b := range repo.Roots {
		files[release.RootFile(int64(i+1))] = b
	}
	v, err := c.PushRelease(ctx, files)
	if err != nil {
		return err
	}
	return o.print(v, func(tw io.Writer) {
		fmt.Fprintf(tw, "root v%d, targets v%d (expires %s), timestamp v%d\n", v.RootVersion, v.TargetsVersion, v.TargetsExpires.Format(time.RFC3339), v.TimestampVersion)
		fmt.Fprintln(tw, "TARGET\tMODEL\tRELEASE\tVERSION\tUPLOADED\tDIGEST")
		for _, t := range v.Targets {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%v\t%s\n", t.Path, t.Model, t.Release, or(t.Version, "-"), t.Uploaded, t.Digest[:16])
		}
	})
}

// bundlePush uploads a bundle from a local store (flotctl bundle build's
// output): the manifest first; the server names the chunks it lacks,
// those are uploaded, then the manifest again.
func bundlePush(ctx context.Context, c *apiclient.Client, o out, stderr io.Writer, args []string) error {
	fs := subFlags("bundle push")
	store := fs.String("store", "", "bundle store folder (flotctl bundle build -o)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if *store == "" || len(pos) > 1 {
		return fmt.Errorf("%w: bundle push -store STORE [DIGEST]", errUsage)
	}
	s, err := bundle.OpenStore(*store)
	if err != nil {
		return err
	}
	digest := ""
	if len(pos) == 1 {
		digest = pos[0]
	} else if digest, err = onlyManifest(*store); err != nil {
		return err
	}
	raw, _, err := s.Manifest(digest)
	if err != nil {
		return err
	}
	uploaded := 0
	for attempt := 0; ; attempt++ {
		v, err := c.PushBundle(ctx, raw)
		var missing *apiclient.MissingError
		if errors.As(err, &missing) && attempt == 0 {
			for _, h := range missing.Missing {
				sum, err := hex.DecodeString(h)
				if err != nil || len(sum) != 32 {
					return fmt.Errorf("server named chunk %q", h)
				}
				data, err := s.Chunk([32]byte(sum))
				if err != nil {
					return err
				}
				if err := c.PutChunk(ctx, [32]byte(sum), data); err != nil {
					return fmt.Errorf("upload chunk %s: %w", h[:16], err)
				}
				uploaded++
			}
			fmt.Fprintf(stderr, "uploaded %d chunks\n", uploaded)
			continue
		}
		if err != nil {
			return err
		}
		return o.print(v, func(tw io.Writer) {
			fmt.Fprintf(tw, "digest\t%s\nname\t%s\nrelease\t%d\ntarget\t%s\nfiles\t%d\nchunks\t%d (%d uploaded now)\nbytes\t%d\n",
				v.Digest, v.Name, v.Release, v.Target, v.Files, v.Chunks, uploaded, v.Bytes)
		})
	}
}

// onlyManifest is the digest of the one manifest in a store.
func onlyManifest(store string) (string, error) {
	names, err := filepath.Glob(filepath.Join(store, "manifests", "*"))
	if err != nil {
		return "", err
	}
	var digests []string
	for _, n := range names {
		if b := filepath.Base(n); !strings.HasPrefix(b, ".") {
			digests = append(digests, b)
		}
	}
	if len(digests) != 1 {
		return "", fmt.Errorf("%w: %s holds %d manifests; name the DIGEST", errUsage, store, len(digests))
	}
	return digests[0], nil
}

func devicesAssign(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("%w: devices assign DEVICE MODEL RELEASE", errUsage)
	}
	rel, err := strconv.ParseUint(args[2], 10, 64)
	if err != nil || rel == 0 {
		return fmt.Errorf("%w: RELEASE is the model's release counter, a number > 0", errUsage)
	}
	v, err := c.Assign(ctx, args[0], args[1], rel)
	if err != nil {
		return err
	}
	return o.print(v, func(tw io.Writer) {
		fmt.Fprintf(tw, "assigned %s release %d to %s (desired revision %d, bundle %s)\n", v.Model, v.Release, v.Device, v.Revision, v.Digest[:16])
	})
}

// devicesProgress prints the device's fetch progress with a bar; -watch
// redraws it every interval until every bundle is staged or failed, or
// the context ends.
func devicesProgress(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("devices progress")
	watch := fs.Bool("watch", false, "redraw until done")
	every := fs.Duration("interval", time.Second, "redraw interval with -watch")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: devices progress DEVICE [-watch]", errUsage)
	}
	for {
		ps, err := c.Progress(ctx, pos[0])
		if err != nil {
			return err
		}
		if o.json {
			if err := o.print(ps, nil); err != nil {
				return err
			}
		} else {
			if len(ps) == 0 {
				fmt.Fprintf(o.w, "%s: no fetch reported\n", pos[0])
			}
			for _, p := range ps {
				fmt.Fprintln(o.w, progressLine(p))
			}
		}
		if !*watch || finished(ps) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(*every):
		}
	}
}

func finished(ps []api.ProgressView) bool {
	for _, p := range ps {
		if p.State != "staged" && p.State != "failed" {
			return false
		}
	}
	return len(ps) > 0
}

const barWidth = 30

// progressLine draws one bundle's progress:
//
//	digits r2 [##########--------------------]  33%  12/36 chunks  1.2 MiB/3.4 MiB  512 KiB/s  fetching
func progressLine(p api.ProgressView) string {
	frac := 0.0
	if p.BytesTotal > 0 {
		frac = float64(p.BytesHave) / float64(p.BytesTotal)
	}
	if p.State == "staged" {
		frac = 1
	}
	n := int(frac * barWidth)
	bar := strings.Repeat("#", n) + strings.Repeat("-", barWidth-n)
	line := fmt.Sprintf("%s r%d [%s] %3d%%  %d/%d chunks  %s/%s  %s/s  %s",
		p.Model, p.Release, bar, int(frac*100), p.ChunksHave, p.ChunksTotal,
		size(int64(p.BytesHave)), size(int64(p.BytesTotal)), size(int64(p.Rate)), p.State)
	if p.Error != "" {
		line += ": " + p.Error
	}
	return line
}

func size(b int64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}
