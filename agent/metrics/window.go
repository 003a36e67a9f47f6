package metrics

import (
	"context"
	"fmt"
	"sort"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Baseline is what a model release's summaries are binned and scored on.
type Baseline struct {
	Drift        *pb.DriftBaseline // nil: counts and latency only
	Thresholds   summary.Thresholds
	MinRecords   uint64 // windows with fewer records are carried forward
	Version      string
	BundleDigest string
}

// Baselines looks up a model release's baseline.
type Baselines interface {
	Baseline(model string, release uint64) (Baseline, bool)
}

// BaselineFromManifest is the baseline a bundle manifest carries, with the
// thresholds in force (see summary.EffectiveThresholds) and the minimum
// window size (see summary.MinRecordsOf).
func BaselineFromManifest(m *pb.BundleManifest, digest string) Baseline {
	return Baseline{
		Drift:        m.GetDrift(),
		Thresholds:   summary.EffectiveThresholds(m.GetDrift().GetThresholds(), nil),
		MinRecords:   summary.MinRecordsOf(m),
		Version:      m.GetVersion(),
		BundleDigest: digest,
	}
}

func (b *Buffer) baseline(model string, release uint64) Baseline {
	if b.opt.Baselines != nil {
		if bl, ok := b.opt.Baselines.Baseline(model, release); ok {
			return bl
		}
	}
	return Baseline{MinRecords: 1, Thresholds: summary.EffectiveThresholds(nil, nil)}
}

// CloseWindows turns every window that has ended by now into summaries in
// the outbox, removing their records. A window with fewer records than the
// baseline's minimum is carried forward into the next, up to MaxCarry
// windows, after which it is summarised unjudged. It returns the number of
// summaries made.
func (b *Buffer) CloseWindows(ctx context.Context) (int, error) {
	if err := b.Sync(ctx); err != nil {
		return 0, err
	}
	now := b.opt.Now().UnixMilli()
	w := b.opt.Window.Milliseconds()
	rows, err := b.db.QueryContext(ctx, `SELECT model, MIN(min_at_ms), MAX(release) FROM runs GROUP BY model ORDER BY model`)
	if err != nil {
		return 0, fmt.Errorf("metrics: close windows: %w", err)
	}
	type pending struct {
		model   string
		minAt   int64
		release uint64
	}
	var ps []pending
	for rows.Next() {
		var p pending
		var rel int64
		if err := rows.Scan(&p.model, &p.minAt, &rel); err != nil {
			rows.Close()
			return 0, err
		}
		p.release = uint64(rel)
		ps = append(ps, p)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	made := 0
	for _, p := range ps {
		minRecords := max(1, b.baseline(p.model, p.release).MinRecords)
		start := floorDiv(p.minAt, w) * w
		for end := start + w; end <= now; end += w {
			var n uint64
			if err := b.db.QueryRowContext(ctx, `SELECT COALESCE(SUM(n), 0) FROM runs WHERE model = ? AND max_at_ms < ?`,
				p.model, end).Scan(&n); err != nil {
				return made, err
			}
			if n == 0 {
				start = end
				continue
			}
			if n < minRecords && (end-start)/w < int64(b.opt.MaxCarry) {
				continue // carried forward
			}
			k, err := b.emit(ctx, p.model, start, end)
			if err != nil {
				return made, err
			}
			made += k
			start = end
		}
	}
	return made, nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

type groupKey struct {
	release uint64
	slot    string
}

// emit summarises the model's records before end as one window from start,
// one summary per (release, slot), into one outbox row, in one transaction.
func (b *Buffer) emit(ctx context.Context, model string, start, end int64) (int, error) {
	tx, err := b.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT release, version, slot, window_ms, n, data
		FROM runs WHERE model = ? AND max_at_ms < ? ORDER BY id`, model, end)
	if err != nil {
		return 0, err
	}
	windows := map[groupKey]*summary.Window{}
	baselines := map[groupKey]Baseline{}
	var damaged uint64
	for rows.Next() {
		var (
			rel, win, n int64
			ver, slot   string
			data        []byte
		)
		if err := rows.Scan(&rel, &ver, &slot, &win, &n, &data); err != nil {
			rows.Close()
			return 0, err
		}
		k := groupKey{uint64(rel), slot}
		w, found := windows[k]
		if !found {
			bl := b.baseline(model, k.release)
			if bl.Version == "" {
				bl.Version = ver
			}
			baselines[k] = bl
			w = summary.NewWindow(summary.Meta{Model: model, Release: k.release, Version: bl.Version,
				Slot: slot, BundleDigest: bl.BundleDigest}, bl.Drift, start)
			windows[k] = w
		}
		n = min(max(n, 0), maxRunRecords)
		given, _ := decodeRun(data, win, int(n), func(r runRecord) {
			// A damaged feature blob leaves the record without features:
			// it still counts as a request.
			w.Add(summary.Record{LatencyMs: float64(r.latencyUs) / 1000, OK: r.ok, Features: r.features,
				Missing: r.missing, Prediction: r.prediction, HasPrediction: r.hasPrediction, Unsampled: r.unsampled})
		})
		damaged += uint64(int(n) - given)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	keys := make([]groupKey, 0, len(windows))
	for k := range windows {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].release != keys[j].release {
			return keys[i].release < keys[j].release
		}
		return keys[i].slot < keys[j].slot
	})
	out := &pb.Summaries{}
	for _, k := range keys {
		win := windows[k]
		if b.opt.Counters != nil {
			win.AddCounters(b.opt.Counters.Take(model, k.release))
		}
		s := win.Summary(end)
		bl := baselines[k]
		s.Scores = summary.Score(bl.Drift, s, bl.Thresholds, bl.MinRecords)
		out.Summaries = append(out.Summaries, s)
	}
	payload, err := wire.Encode(out)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (start_ms, end_ms, payload) VALUES (?, ?, ?)`,
		start, end, payload); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM runs WHERE model = ? AND max_at_ms < ?`, model, end); err != nil {
		return 0, err
	}
	if err := tx.Commit(); err != nil {
		return 0, err
	}
	b.damaged.Add(damaged)
	b.summaries.Add(uint64(len(out.Summaries)))
	return len(out.Summaries), nil
}

// Run closes windows and drains the outbox until ctx ends, every tick of
// interval on the real clock (the injected clock decides what is due).
func (b *Buffer) Run(ctx context.Context, interval time.Duration, publish Publish) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if _, err := b.CloseWindows(ctx); err != nil && ctx.Err() == nil {
			continue
		}
		_, _ = b.Drain(ctx, publish)
	}
}
