package telemetry

import (
	"context"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// RollupOptions configure Rollup.
type RollupOptions struct {
	// Grace is how long after a bucket ends it is rolled up, so summaries
	// sent on time are in; later ones mark the bucket dirty. 5 minutes.
	Grace time.Duration
}

// Rollup brings the hourly and daily rollups up to now: dirty buckets are
// recomputed from the raw summaries, and every bucket that ended more than
// Grace ago and is past the watermark is rolled up. A bucket's summaries
// are those whose window starts in it.
func Rollup(ctx context.Context, st Store, now time.Time, opt RollupOptions) error {
	if opt.Grace <= 0 {
		opt.Grace = 5 * time.Minute
	}
	for _, g := range []string{store.Hourly, store.Daily} {
		if err := rollupOne(ctx, st, g, now.Add(-opt.Grace).UnixMilli()); err != nil {
			return fmt.Errorf("rollup %s: %w", g, err)
		}
	}
	return nil
}

func rollupOne(ctx context.Context, st Store, g string, upTo int64) error {
	size := store.BucketSize(g)
	target := upTo - mod(upTo, size)
	// Claim first: a summary stored from now on below target marks its
	// bucket dirty, whether or not the reads below see it; one stored before
	// is seen by them.
	if err := st.ClaimRollup(ctx, g, target); err != nil {
		return err
	}
	wm, dirty, err := st.RollupState(ctx, g)
	if err != nil {
		return err
	}
	var out []store.Rollup
	for _, k := range dirty {
		rows, err := st.ListSummaries(ctx, store.SummaryFilter{Model: k.Model, Release: k.Release, DeviceID: k.DeviceID,
			FromMs: k.BucketStart, ToMs: k.BucketStart + size})
		if err != nil {
			return err
		}
		rs, err := merge(g, rows)
		if err != nil {
			return err
		}
		out = append(out, rs...)
	}
	if wm == 0 {
		oldest, ok, err := st.OldestSummaryStart(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return st.PutRollups(ctx, g, out, dirty, 0)
		}
		wm = oldest - mod(oldest, size)
	}
	// One bucket at a time, so memory stays bounded by one bucket's data.
	for b := wm; b < target; b += size {
		rows, err := st.SummariesBetween(ctx, b, b+size)
		if err != nil {
			return err
		}
		rs, err := merge(g, rows)
		if err != nil {
			return err
		}
		out = append(out, rs...)
		if len(out) >= 1000 {
			if err := st.PutRollups(ctx, g, out, dirty, b+size); err != nil {
				return err
			}
			out, dirty = nil, nil
		}
	}
	return st.PutRollups(ctx, g, out, dirty, max(wm, target))
}

// merge merges stored summaries into one rollup per (device, model,
// release, bucket).
func merge(g string, rows []store.StoredSummary) ([]store.Rollup, error) {
	size := store.BucketSize(g)
	type key struct {
		device, model string
		release       uint64
		bucket        int64
	}
	acc := map[key]*pb.WindowSummary{}
	var order []key
	for _, r := range rows {
		var s pb.WindowSummary
		if err := wire.Decode(r.Payload, maxPayload, &s); err != nil {
			return nil, err
		}
		k := key{r.DeviceID, r.Model, r.Release, r.StartMs - mod(r.StartMs, size)}
		cur, ok := acc[k]
		if !ok {
			acc[k] = &s
			order = append(order, k)
			continue
		}
		m, err := summary.Merge(cur, &s)
		if err != nil {
			return nil, fmt.Errorf("device %s: %w", r.DeviceID, err)
		}
		acc[k] = m
	}
	out := make([]store.Rollup, 0, len(order))
	for _, k := range order {
		s := acc[k]
		s.Scores = nil
		payload, err := wire.Encode(s)
		if err != nil {
			return nil, err
		}
		out = append(out, store.Rollup{Granularity: g, DeviceID: k.device, Model: k.model, Release: k.release,
			BucketStart: k.bucket, Payload: payload})
	}
	return out, nil
}

// Retention says how long telemetry is kept; zero values take the
// defaults.
type Retention struct {
	Raw    time.Duration // raw summaries: 7 days
	Hourly time.Duration // hourly rollups: 90 days
	Daily  time.Duration // daily rollups: 2 years
	Events time.Duration // device events, from their arrival: 30 days
}

// Expire deletes telemetry older than the retention allows, returning the
// rows deleted. Raw summaries are kept until their daily rollup exists;
// device events go by the time they arrived.
func Expire(ctx context.Context, st Store, now time.Time, r Retention) (int64, error) {
	if r.Raw <= 0 {
		r.Raw = 7 * 24 * time.Hour
	}
	if r.Hourly <= 0 {
		r.Hourly = 90 * 24 * time.Hour
	}
	if r.Daily <= 0 {
		r.Daily = 2 * 365 * 24 * time.Hour
	}
	if r.Events <= 0 {
		r.Events = 30 * 24 * time.Hour
	}
	rawBefore := now.Add(-r.Raw).UnixMilli()
	dwm, _, err := st.RollupState(ctx, store.Daily)
	if err != nil {
		return 0, err
	}
	rawBefore = min(rawBefore, dwm)
	return st.DeleteTelemetryBefore(ctx, store.TelemetryRetention{
		RawBefore:    rawBefore,
		HourlyBefore: now.Add(-r.Hourly).UnixMilli(),
		DailyBefore:  now.Add(-r.Daily).UnixMilli(),
		EventsBefore: now.Add(-r.Events).UnixMilli(),
	})
}
