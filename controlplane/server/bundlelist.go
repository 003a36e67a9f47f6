package server

import (
	"context"
	"sort"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

var _ api.BundleLister = (*deliveryService)(nil)

// ListBundles implements api.BundleLister: every target of the release
// repository, with what its manifest says once uploaded.
func (d *deliveryService) ListBundles(ctx context.Context) (api.BundleList, error) {
	d.trust.mu.Lock()
	repo := d.trust.repo
	d.trust.mu.Unlock()
	if repo == nil {
		return api.BundleList{Bundles: []api.ReleasedBundle{}}, nil
	}
	rv := releaseView(repo, d.uploaded)
	out := api.BundleList{RootVersion: rv.RootVersion, TargetsVersion: rv.TargetsVersion, TargetsExpires: rv.TargetsExpires,
		Bundles: make([]api.ReleasedBundle, 0, len(rv.Targets))}
	if root, err := repo.Root(); err == nil {
		if role, ok := root.Signed.Roles["targets"]; ok && role != nil {
			out.Threshold = role.Threshold
		}
	}
	if tm, err := repo.TargetsMeta(); err == nil {
		for _, sig := range tm.Signatures {
			out.SignedBy = append(out.SignedBy, sig.KeyID)
		}
		sort.Strings(out.SignedBy)
	}
	for _, t := range rv.Targets {
		if ctx.Err() != nil {
			return api.BundleList{}, ctx.Err()
		}
		b := api.ReleasedBundle{ReleaseTarget: t}
		if t.Uploaded {
			if _, m, err := d.store.Manifest(t.Digest); err == nil {
				b.Files = len(m.GetFiles())
				for _, f := range m.GetFiles() {
					b.Bytes += f.GetSize()
					b.Chunks += len(f.GetChunks())
				}
				for _, v := range m.GetVariants() {
					b.Variants = append(b.Variants, api.VariantView{Runtime: v.GetRuntime(), Accelerators: v.GetAccelerators(), Platforms: v.GetPlatforms()})
				}
			}
		}
		out.Bundles = append(out.Bundles, b)
	}
	return out, nil
}
