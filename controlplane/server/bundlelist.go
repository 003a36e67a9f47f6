package server

import (
	"context"
	"sort"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

var _ api.BundleLister = (*deliveryService)(nil)

// ListBundles implements api.BundleLister: every target of the release
// repository, with what its manifest says once uploaded.
func (d *deliveryService) ListBundles(ctx context.Context) (api.BundleList, error) {
	repo, err := d.trust.current(ctx)
	if err != nil {
		return api.BundleList{}, err
	}
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

var _ api.ModelReports = (*deliveryService)(nil)

func healthName(h pb.ModelState_Health) string {
	switch h {
	case pb.ModelState_HEALTH_HEALTHY:
		return "healthy"
	case pb.ModelState_HEALTH_PROBATION:
		return "probation"
	case pb.ModelState_HEALTH_UNHEALTHY:
		return "unhealthy"
	case pb.ModelState_HEALTH_ROLLED_BACK:
		return "rolled_back"
	}
	return "unknown"
}

// DeviceModels implements api.ModelReports from the device's latest
// reported state (kept in memory: empty after a restart until the device
// reports again).
func (d *deliveryService) DeviceModels(_ context.Context, device string) ([]api.ModelView, error) {
	ms := d.s.ReportedModels(device)
	out := make([]api.ModelView, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.ModelView{Name: m.GetName(), ActiveRelease: m.GetActiveRelease(), ActiveVersion: m.GetActiveVersion(),
			ActiveSlot: m.GetActiveSlot(), Health: healthName(m.GetHealth()), LastError: m.GetLastError(), Rollbacks: m.GetRollbacks(),
			StagedRelease: m.GetStagedRelease(), StagedVersion: m.GetStagedVersion(), StagedSlot: m.GetStagedSlot()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// FleetModels implements api.ModelReports: the active releases the
// devices last reported, counted.
func (d *deliveryService) FleetModels(context.Context) ([]api.ModelVersionView, error) {
	type key struct {
		model   string
		release uint64
	}
	counts := map[key]*api.ModelVersionView{}
	b := d.progress
	b.mu.Lock()
	for _, ms := range b.models {
		for _, m := range ms {
			if m.GetActiveRelease() == 0 {
				continue
			}
			k := key{m.GetName(), m.GetActiveRelease()}
			v := counts[k]
			if v == nil {
				v = &api.ModelVersionView{Model: k.model, Release: k.release, Version: m.GetActiveVersion(), ByHealth: map[string]int{}}
				counts[k] = v
			}
			v.Devices++
			v.ByHealth[healthName(m.GetHealth())]++
		}
	}
	b.mu.Unlock()
	out := make([]api.ModelVersionView, 0, len(counts))
	for _, v := range counts {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Model < out[j].Model || out[i].Model == out[j].Model && out[i].Release < out[j].Release
	})
	return out, nil
}
