package telemetry

import (
	"context"
	"fmt"
	"sort"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// maxPayload bounds one stored summary's encoding when read back.
const maxPayload = 4 << 20

// Result is a query's answer: per model release, the merge of every
// summary in range, and where it came from.
type Result struct {
	Releases       []*pb.WindowSummary // by release
	Devices        int                 // distinct devices contributing
	ReleaseDevices map[uint64]int      // distinct devices contributing, per release
	Raw            int                 // raw summaries merged
	Rollups        int                 // rollup rows merged
}

// Query answers drift queries for the filter: one device (DeviceID), a
// cohort (Selector, and Release for a model version) or the fleet (neither),
// over [FromMs, ToMs) of window starts. Full days below the daily rollup's
// watermark come from daily rollups, full hours below the hourly one from
// hourly rollups, the rest from raw summaries; a granularity with a dirty
// bucket (a late summary not yet rolled in) is not used, so the answer is
// always the merge of exactly the summaries stored.
func Query(ctx context.Context, st Store, f store.SummaryFilter) (*Result, error) {
	plan, err := planQuery(ctx, st, f.FromMs, f.ToMs)
	if err != nil {
		return nil, err
	}
	acc := map[uint64]*pb.WindowSummary{}
	devices := map[string]bool{}
	type devRel struct {
		device  string
		release uint64
	}
	perRelease := map[devRel]bool{}
	res := &Result{}
	add := func(device string, payload []byte) error {
		var s pb.WindowSummary
		if err := wire.Decode(payload, maxPayload, &s); err != nil {
			return fmt.Errorf("telemetry query: stored summary: %w", err)
		}
		devices[device] = true
		perRelease[devRel{device, s.GetRelease()}] = true
		cur, ok := acc[s.GetRelease()]
		if !ok {
			acc[s.GetRelease()] = &s
			return nil
		}
		m, err := summary.Merge(cur, &s)
		if err != nil {
			return err
		}
		acc[s.GetRelease()] = m
		return nil
	}
	for _, seg := range plan {
		sf := f
		sf.FromMs, sf.ToMs = seg.from, seg.to
		if seg.g == "" {
			rows, err := st.ListSummaries(ctx, sf)
			if err != nil {
				return nil, err
			}
			for _, r := range rows {
				if err := add(r.DeviceID, r.Payload); err != nil {
					return nil, err
				}
			}
			res.Raw += len(rows)
			continue
		}
		rows, err := st.ListRollups(ctx, seg.g, sf)
		if err != nil {
			return nil, err
		}
		for _, r := range rows {
			if err := add(r.DeviceID, r.Payload); err != nil {
				return nil, err
			}
		}
		res.Rollups += len(rows)
	}
	for _, s := range acc {
		s.Scores = nil
		res.Releases = append(res.Releases, s)
	}
	sort.Slice(res.Releases, func(i, j int) bool { return res.Releases[i].GetRelease() < res.Releases[j].GetRelease() })
	res.Devices = len(devices)
	res.ReleaseDevices = map[uint64]int{}
	for k := range perRelease {
		res.ReleaseDevices[k.release]++
	}
	return res, nil
}

// Score scores a query result's release against its baseline.
func Score(s *pb.WindowSummary, b *pb.DriftBaseline, manifest *pb.DriftThresholds, minRecords uint64) *pb.DriftScores {
	return summary.Score(b, s, summary.EffectiveThresholds(manifest, nil), minRecords)
}

type segment struct {
	g        string // "" raw, else a rollup granularity
	from, to int64
}

// planQuery splits [from, to) into rollup and raw segments.
func planQuery(ctx context.Context, st Store, from, to int64) ([]segment, error) {
	if to <= from {
		return nil, fmt.Errorf("%w: empty time range", store.ErrInvalid)
	}
	usable := map[string]int64{}
	for _, g := range []string{store.Daily, store.Hourly} {
		wm, dirty, err := st.RollupState(ctx, g)
		if err != nil {
			return nil, err
		}
		clean := true
		for _, d := range dirty {
			if d.BucketStart+store.BucketSize(g) > from && d.BucketStart < to {
				clean = false
			}
		}
		if clean && wm > 0 {
			usable[g] = wm
		}
	}
	var split func(from, to int64, gs []string) []segment
	split = func(from, to int64, gs []string) []segment {
		if from >= to {
			return nil
		}
		if len(gs) == 0 {
			return []segment{{"", from, to}}
		}
		g, rest := gs[0], gs[1:]
		wm, ok := usable[g]
		size := store.BucketSize(g)
		lo := ceilTo(from, size)
		hi := min(to-mod(to, size), wm-mod(wm, size))
		if !ok || lo >= hi {
			return split(from, to, rest)
		}
		out := split(from, lo, rest)
		out = append(out, segment{g, lo, hi})
		return append(out, split(hi, to, rest)...)
	}
	return split(from, to, []string{store.Daily, store.Hourly}), nil
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func ceilTo(a, b int64) int64 {
	if m := mod(a, b); m != 0 {
		return a + b - m
	}
	return a
}
