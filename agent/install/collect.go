package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/flotilla-edge/flotilla/agent/trust"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// liveManifests lists the manifests whose chunks the chunk store must
// keep: per model, those of its active slot (Slots) and of its staged one
// (staged.json), as kept beside the slots. A slot with no manifest file
// has no chunks here (a sideload); one that cannot be read is an error,
// so nothing is collected on a guess.
func (in *Installer) liveManifests() ([]*pb.BundleManifest, error) {
	slots := map[string]map[string]bool{} // model → slots
	add := func(model, slot string) {
		if slot == "" {
			return
		}
		if slots[model] == nil {
			slots[model] = map[string]bool{}
		}
		slots[model][slot] = true
	}
	in.mu.Lock()
	for model, st := range in.staged {
		add(model, st.Slot)
	}
	in.mu.Unlock()
	if in.cfg.Slots != nil {
		ents, err := os.ReadDir(filepath.Join(in.cfg.Dir, "models"))
		if err != nil {
			return nil, fmt.Errorf("live manifests: %w", err)
		}
		for _, e := range ents {
			if e.IsDir() {
				add(e.Name(), in.cfg.Slots.ActiveSlot(e.Name()))
			}
		}
	}
	var live []*pb.BundleManifest
	for model, ss := range slots {
		for slot := range ss {
			p := filepath.Join(in.cfg.Dir, "models", model, slot+".manifest")
			raw, err := readLimited(p, pb.MaxManifestSize)
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("live manifests: %w", err)
			}
			m := new(pb.BundleManifest)
			if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
				return nil, fmt.Errorf("live manifests: %s: %w", p, err)
			}
			live = append(live, m)
		}
	}
	return live, nil
}

// collectChunks removes the chunks no live manifest names, after a
// bundle was staged (and activated). A failure is logged: the chunks
// stay, and the next collection (or a Put over quota) tries again.
func (in *Installer) collectChunks(ctx context.Context) {
	live, err := in.liveManifests()
	if err != nil {
		in.cfg.Logger.Warn("chunks not collected", "err", err)
		return
	}
	n, freed, err := in.chunks.Collect(ctx, live)
	if err != nil {
		in.cfg.Logger.Warn("chunk collection failed", "err", err)
		return
	}
	if n > 0 {
		in.cfg.Logger.Info("chunks collected", "chunks", n, "bytes", freed)
	}
}

// unpinSuperseded drops the download pins (stage.go) of releases the
// desired state no longer asks for: a model that is no longer desired, or
// whose desired release is another, or one that is staged already.
func (in *Installer) unpinSuperseded(ctx context.Context, v *trust.Verifier, targets []trust.Target) {
	for model, m := range in.chunks.Pins() {
		wanted := false
		for _, t := range targets {
			if t.Model == model && t.ReleaseCounter == m.GetRelease() && t.ReleaseCounter > v.InstalledCounter(model) {
				wanted = true
			}
		}
		if wanted {
			continue
		}
		if err := in.chunks.Unpin(ctx, model); err != nil {
			in.cfg.Logger.Warn("download pin not dropped", "model", model, "err", err)
		}
	}
}

// readLimited reads a file of at most limit bytes.
func readLimited(path string, limit int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return b, nil
}
