package install

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/trust"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// progressEvery spaces FetchProgress messages while chunks stream in.
const progressEvery = 250 * time.Millisecond

// stage takes one verified target to its model's inactive slot.
func (in *Installer) stage(ctx context.Context, link Link, v *trust.Verifier, t trust.Target) (*Staged, error) {
	log := in.cfg.Logger.With("model", t.Model, "release", t.ReleaseCounter, "bundle", t.SHA256[:16])
	rep := &reporter{in: in, link: link, p: &pb.FetchProgress{DeviceId: in.cfg.DeviceID, BundleDigest: t.SHA256, Model: t.Model, Release: t.ReleaseCounter}}
	fail := func(err error) (*Staged, error) {
		rep.send(ctx, pb.FetchProgress_STATE_FAILED, err.Error())
		log.Warn("bundle not staged", "err", err)
		return nil, err
	}
	rep.send(ctx, pb.FetchProgress_STATE_VERIFYING, "")
	raw, err := in.manifest(ctx, link, t.SHA256)
	if err != nil {
		return fail(err)
	}
	if err := t.Check(raw); err != nil {
		return fail(err)
	}
	m := new(pb.BundleManifest)
	if err := wire.DecodeTopic(topic.Manifest, raw, m); err != nil {
		return fail(fmt.Errorf("%w: %w", ErrManifestMismatch, err))
	}
	if m.GetName() != t.Model || m.GetRelease() != t.ReleaseCounter {
		return fail(fmt.Errorf("manifest names %s release %d, the release repository %s release %d: %w",
			m.GetName(), m.GetRelease(), t.Model, t.ReleaseCounter, ErrManifestMismatch))
	}
	// Its chunks are live until it is staged, also across a failed fetch
	// and a restart, so another model's collection never takes what this
	// download already has (collect.go); a newer desired release, or none,
	// unpins it (Apply).
	if err := in.chunks.Pin(ctx, t.Model, m); err != nil {
		return fail(err)
	}
	opts := in.cfg.Fetch
	opts.DeviceID, opts.Digest, opts.Scheme = in.cfg.DeviceID, t.SHA256, in.cfg.Scheme
	opts.Progress = func(p fetch.Progress) { rep.fetched(ctx, p) }
	rep.send(ctx, pb.FetchProgress_STATE_FETCHING, "")
	if err := fetch.Fetch(ctx, link, in.chunks, m, opts); err != nil {
		return fail(err)
	}
	rep.send(ctx, pb.FetchProgress_STATE_UNPACKING, "")
	slot := in.inactiveSlot(t.Model)
	mdir := filepath.Join(in.cfg.Dir, "models", t.Model)
	dir := filepath.Join(mdir, slot)
	if err := os.MkdirAll(mdir, 0o700); err != nil {
		return fail(err)
	}
	if err := unpack.Unpack(ctx, in.chunks, m, dir, in.cfg.Limits); err != nil {
		_ = os.Remove(mdir) // only if empty: a refused first bundle leaves no trace
		return fail(err)
	}
	if err := state.WriteFileAtomic(filepath.Join(mdir, slot+".manifest"), raw, 0o600); err != nil {
		return fail(err)
	}
	// staged.json first, then the counter floor: a crash in between
	// leaves a staged release whose floor Apply raises (install.go); the
	// other order left a floor that skipped a release never staged.
	st := Staged{Model: t.Model, Release: t.ReleaseCounter, Version: t.Version, Digest: t.SHA256, Target: t.Path,
		Slot: slot, Dir: dir, At: in.cfg.Now().UTC()}
	in.mu.Lock()
	prev, hadPrev := in.staged[t.Model]
	in.staged[t.Model] = st
	in.mu.Unlock()
	if err := in.saveStaged(); err != nil {
		in.unstage(t.Model, prev, hadPrev)
		return fail(err)
	}
	if err := v.RecordInstalled(t); err != nil {
		in.unstage(t.Model, prev, hadPrev)
		if serr := in.saveStaged(); serr != nil {
			log.Warn("staged.json not restored", "err", serr)
		}
		return fail(err)
	}
	if err := in.chunks.Unpin(ctx, t.Model); err != nil {
		log.Warn("download pin not dropped", "err", err) // the staged slot names the same chunks
	}
	rep.send(ctx, pb.FetchProgress_STATE_STAGED, "")
	log.Info("bundle staged", "slot", slot, "dir", dir)
	if in.cfg.Stager != nil {
		if err := in.cfg.Stager.OnStaged(ctx, st, m); err != nil {
			log.Warn("stager refused the staged bundle", "err", err)
			return &st, fmt.Errorf("staged in slot %s; activation: %w", slot, err)
		}
	}
	return &st, nil
}

// unstage puts back what was staged for model before a staging that
// failed.
func (in *Installer) unstage(model string, prev Staged, had bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if had {
		in.staged[model] = prev
	} else {
		delete(in.staged, model)
	}
}

// manifest waits for the bundle's retained manifest.
func (in *Installer) manifest(ctx context.Context, link Link, digest string) ([]byte, error) {
	name := in.cfg.Scheme.Bundle(topic.Manifest, digest)
	got := make(chan []byte, 1)
	if err := link.Subscribe(ctx, name, 1, func(b []byte) {
		if len(b) == 0 {
			return // a cleared retained message
		}
		select {
		case got <- b:
		default:
		}
	}); err != nil {
		return nil, fmt.Errorf("%w: subscribe %s: %w", ErrManifestTimeout, name, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = link.Unsubscribe(uctx, name)
	}()
	t := time.NewTimer(in.cfg.ManifestTimeout)
	defer t.Stop()
	select {
	case b := <-got:
		return b, nil
	case <-t.C:
		return nil, fmt.Errorf("%w within %s on %s", ErrManifestTimeout, in.cfg.ManifestTimeout, name)
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %w", ErrManifestTimeout, ctx.Err())
	}
}

// reporter publishes FetchProgress: every state change, and chunk
// progress at most every progressEvery. Publishing is best effort.
type reporter struct {
	in   *Installer
	link Link
	p    *pb.FetchProgress
	last time.Time
}

func (r *reporter) fetched(ctx context.Context, p fetch.Progress) {
	r.p.BytesHave, r.p.BytesTotal = uint64(p.BytesHave), uint64(p.BytesTotal)
	r.p.ChunksHave, r.p.ChunksTotal = uint32(p.ChunksHave), uint32(p.ChunksTotal)
	r.p.Rate = max(p.Rate, 0)
	if time.Since(r.last) >= progressEvery || p.Done {
		r.publish(ctx)
	}
}

func (r *reporter) send(ctx context.Context, st pb.FetchProgress_State, msg string) {
	r.p.State, r.p.Error = st, truncate(msg, 1024)
	if st == pb.FetchProgress_STATE_STAGED {
		r.p.BytesHave, r.p.ChunksHave = r.p.BytesTotal, r.p.ChunksTotal
	}
	r.publish(ctx)
}

func (r *reporter) publish(ctx context.Context) {
	r.last = time.Now()
	if r.p.State == pb.FetchProgress_STATE_UNSPECIFIED {
		r.p.State = pb.FetchProgress_STATE_FETCHING
	}
	r.p.SentAtMs = r.in.cfg.Now().UnixMilli()
	b, err := wire.Encode(r.p)
	if err != nil {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.link.Publish(pctx, r.in.cfg.Scheme.Device(topic.Progress, r.in.cfg.DeviceID), 0, b); err != nil {
		r.in.cfg.Logger.Debug("progress not published", "err", err)
	}
}
