package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func telemetryMsg(device string, seq uint64, start int64) store.TelemetryMessage {
	return store.TelemetryMessage{DeviceID: device, Epoch: "e1", Sequence: seq, ReceivedAt: now,
		Summaries: []store.StoredSummary{
			{Model: "m", Release: 1, Slot: "a", StartMs: start, EndMs: start + 60_000, Requests: 10, Payload: []byte{1}},
			{Model: "m", Release: 2, Slot: "b", StartMs: start, EndMs: start + 60_000, Requests: 5, Payload: []byte{2}},
		}}
}

// testTelemetry: each (device, epoch, sequence) is stored once, queries
// filter by device, cohort labels, release and time, rollups replace, and
// late summaries mark rolled-up buckets dirty.
func testTelemetry(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 3, func(i int) map[string]string { return map[string]string{"site": []string{"x", "y", "x"}[i]} })
	hour := store.BucketSize(store.Hourly)
	dup, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{
		telemetryMsg("dev-000", 1, 0), telemetryMsg("dev-000", 2, 60_000), telemetryMsg("dev-001", 1, 0),
		telemetryMsg("dev-000", 1, 0), // resent in the same batch
	})
	if err != nil || dup[0] || dup[1] || dup[2] || !dup[3] {
		t.Fatalf("store: %v %v", dup, err)
	}
	if dup, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-002", 1, hour), telemetryMsg("dev-001", 1, 0)}); err != nil || dup[0] || !dup[1] {
		t.Fatalf("store again: %v %v", dup, err)
	}
	count := func(f store.SummaryFilter) int {
		t.Helper()
		rows, err := s.ListSummaries(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		return len(rows)
	}
	all := store.SummaryFilter{Model: "m", FromMs: 0, ToMs: 10 * hour}
	if n := count(all); n != 8 {
		t.Fatalf("fleet: %d summaries, want 8", n)
	}
	for name, c := range map[string]struct {
		f    store.SummaryFilter
		want int
	}{
		"device":      {store.SummaryFilter{Model: "m", DeviceID: "dev-000", ToMs: hour}, 4},
		"cohort":      {store.SummaryFilter{Model: "m", Selector: map[string]string{"site": "x"}, ToMs: 10 * hour}, 6},
		"release":     {store.SummaryFilter{Model: "m", Release: 2, Selector: map[string]string{"site": "x"}, ToMs: 10 * hour}, 3},
		"time":        {store.SummaryFilter{Model: "m", FromMs: 60_000, ToMs: hour + 1}, 4},
		"other model": {store.SummaryFilter{Model: "n", ToMs: 10 * hour}, 0},
	} {
		if n := count(c.f); n != c.want {
			t.Errorf("%s: %d summaries, want %d", name, n, c.want)
		}
	}
	rows, _ := s.ListSummaries(ctx, store.SummaryFilter{Model: "m", DeviceID: "dev-000", ToMs: hour})
	if rows[0].Sequence != 1 || rows[1].Sequence != 1 || rows[2].Sequence != 2 || rows[0].Release != 1 || rows[0].Requests != 10 {
		t.Errorf("device order: %+v", rows)
	}
	if _, err := s.ListSummaries(ctx, store.SummaryFilter{Model: "m", FromMs: 5, ToMs: 5}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("empty range: %v", err)
	}
	// Rollups: replace on conflict; the watermark only moves forward.
	r := store.Rollup{DeviceID: "dev-000", Model: "m", Release: 1, BucketStart: 0, Payload: []byte{1}}
	if err := s.PutRollups(ctx, store.Hourly, []store.Rollup{r}, nil, hour); err != nil {
		t.Fatal(err)
	}
	r.Payload = []byte{9}
	if err := s.PutRollups(ctx, store.Hourly, []store.Rollup{r}, nil, 1); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListRollups(ctx, store.Hourly, store.SummaryFilter{Model: "m", ToMs: hour})
	if err != nil || len(got) != 1 || got[0].Payload[0] != 9 {
		t.Fatalf("rollups %+v, %v", got, err)
	}
	// A late summary before the watermark marks its bucket dirty.
	if _, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-002", 7, 120_000)}); err != nil {
		t.Fatal(err)
	}
	wm, dirty, err := s.RollupState(ctx, store.Hourly)
	if err != nil || wm != hour || len(dirty) != 2 || dirty[0].DeviceID != "dev-002" || dirty[0].BucketStart != 0 {
		t.Fatalf("rollup state %d %+v %v", wm, dirty, err)
	}
	// A summary marking the bucket again after the state was read keeps it
	// dirty through the clean-up of the older mark.
	if _, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-002", 8, 180_000)}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRollups(ctx, store.Hourly, nil, dirty, hour); err != nil {
		t.Fatal(err)
	}
	_, again, err := s.RollupState(ctx, store.Hourly)
	if err != nil || len(again) != 2 || again[0].Marks != 2 {
		t.Fatalf("marked again during the rollup: %+v %v", again, err)
	}
	if err := s.PutRollups(ctx, store.Hourly, nil, again, hour); err != nil {
		t.Fatal(err)
	}
	if _, dirty, _ := s.RollupState(ctx, store.Hourly); len(dirty) != 0 {
		t.Fatalf("dirty after cleaning: %v", dirty)
	}
	// A claimed rollup: a summary stored below the claim, above the
	// watermark, marks its bucket dirty.
	if err := s.ClaimRollup(ctx, store.Hourly, 3*hour); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-001", 9, 2*hour)}); err != nil {
		t.Fatal(err)
	}
	if wm, dirty, _ := s.RollupState(ctx, store.Hourly); wm != hour || len(dirty) != 2 || dirty[0].BucketStart != 2*hour {
		t.Fatalf("after a claim: watermark %d, dirty %+v", wm, dirty)
	} else if err := s.PutRollups(ctx, store.Hourly, nil, dirty, hour); err != nil {
		t.Fatal(err)
	}
	if oldest, ok, err := s.OldestSummaryStart(ctx); err != nil || !ok || oldest != 0 {
		t.Fatalf("oldest %d %v %v", oldest, ok, err)
	}
	n, err := s.DeleteTelemetryBefore(ctx, store.TelemetryRetention{RawBefore: hour, HourlyBefore: 1})
	if err != nil || count(all) != 4 {
		t.Fatalf("retention deleted %d, %v; %d left", n, err, count(all))
	}
	if got, _ := s.ListRollups(ctx, store.Hourly, store.SummaryFilter{Model: "m", ToMs: hour}); len(got) != 0 {
		t.Fatalf("hourly rollup survived retention")
	}
}
