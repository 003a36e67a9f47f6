package telemetry_test

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// baselineTable is an in-memory baseline lookup, as the server's bundle
// store answers it.
type baselineTable map[string]telemetry.Baseline

func (b baselineTable) Baseline(_ context.Context, model string, release uint64) (telemetry.Baseline, bool, error) {
	bl, ok := b[fmt.Sprint(model, "/", release)]
	return bl, ok, nil
}

// shifted is a window whose every value lands in the overflow bin, where
// the baseline has nothing.
func shifted(start time.Time) *pb.WindowSummary {
	w := summary.NewWindow(summary.Meta{Model: "digits", Release: 2, Slot: "b"}, testBaseline, start.UnixMilli())
	for k := range 50 {
		w.Add(summary.Record{LatencyMs: float64(10 + k), OK: true, Features: []float64{7}})
	}
	return w.Summary(start.Add(time.Minute).UnixMilli())
}

// TestDriftReport: the report's counts, error rate and latency quantiles
// are those of every record stored, its scores those of the merged
// summary against the baseline, and its states follow the thresholds: the
// reference-like release is ok, the shifted one alerts, one without a
// baseline says so.
func TestDriftReport(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	in := telemetry.NewIngest(st, nil, telemetry.Options{})
	var msgs []*telemetry.Message
	var ref []*pb.WindowSummary
	var latencies []float64
	seq := uint64(0)
	for m := range 120 {
		for i := range 3 {
			seq++
			s := windowSummary(m+i, 1, t0.Add(time.Duration(m)*time.Minute))
			ref = append(ref, s)
			for k := range (m+i)%4 + 1 {
				latencies = append(latencies, float64(k+1))
			}
			msgs = append(msgs, telemetry.NewMessage(telemetryOf(fmt.Sprintf("dev-%03d", i), seq, s)))
		}
		if m < 3 {
			seq++
			msgs = append(msgs, telemetry.NewMessage(telemetryOf("dev-009", seq, shifted(t0.Add(time.Duration(m)*time.Minute)))))
		}
		seq++
		other := windowSummary(m, 1, t0.Add(time.Duration(m)*time.Minute))
		other.Model = "other"
		msgs = append(msgs, telemetry.NewMessage(telemetryOf("dev-010", seq, other)))
	}
	if err := in.Store(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	thr := summary.EffectiveThresholds(&pb.DriftThresholds{Js: 0.2}, nil)
	bls := baselineTable{
		"digits/1": {Drift: testBaseline, Thresholds: thr, MinRecords: 100, Version: "1.0"},
		"digits/2": {Drift: testBaseline, Thresholds: thr, MinRecords: 100, Version: "2.0"},
	}
	f := store.SummaryFilter{Model: "digits", FromMs: t0.UnixMilli(), ToMs: t0.Add(3 * time.Hour).UnixMilli()}
	rep, err := telemetry.DriftReport(ctx, st, bls, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Releases) != 2 {
		t.Fatalf("%d releases, want 2", len(rep.Releases))
	}
	r1, r2 := rep.Releases[0], rep.Releases[1]

	merged, err := summary.MergeAll(ref)
	if err != nil {
		t.Fatal(err)
	}
	want := summary.Score(testBaseline, merged, thr, 100)
	if r1.Requests != merged.Requests || r1.Errors != merged.Errors || r1.Devices != 3 || r1.Windows != 360 ||
		r1.ErrorRate != float64(merged.Errors)/float64(merged.Requests) || r1.Version != "1.0" {
		t.Fatalf("release 1: %+v", r1)
	}
	sort.Float64s(latencies)
	for _, q := range []struct {
		got, q float64
	}{{r1.P50, 0.5}, {r1.P95, 0.95}, {r1.P99, 0.99}} {
		exact := latencies[int(q.q*float64(len(latencies)-1))]
		if !r1.Latency || math.Abs(q.got-exact) > 0.01*exact {
			t.Errorf("p%.0f = %v, true %v (1 %% accuracy)", q.q*100, q.got, exact)
		}
	}
	if len(r1.Features) != 1 || r1.Features[0].JS != want.Features[0].Js || r1.Features[0].PSI != want.Features[0].Psi ||
		r1.Features[0].KS != want.Features[0].Ks || r1.MaxJS != want.MaxJs || !r1.Judged {
		t.Fatalf("release 1 scores %+v, want %v", r1.Features, want)
	}
	if r1.Features[0].Count != merged.Features[0].Count || r1.Thresholds != thr {
		t.Fatalf("release 1 feature %+v", r1.Features[0])
	}
	// The histograms: the baseline's bins and counts, and the merged
	// summaries' counts on them.
	h := r1.Features[0]
	if !slices.Equal(h.Edges, testBaseline.Features[0].BinEdges) || !slices.Equal(h.BaselineBins, testBaseline.Features[0].Counts) ||
		!slices.Equal(h.Bins, merged.Features[0].Bins) || len(h.Bins) == 0 {
		t.Fatalf("release 1 histogram: edges %v baseline %v current %v; want %v %v %v", h.Edges, h.BaselineBins, h.Bins,
			testBaseline.Features[0].BinEdges, testBaseline.Features[0].Counts, merged.Features[0].Bins)
	}
	if last := r2.Features[0].Bins; len(last) == 0 || last[len(last)-1] != 150 {
		t.Fatalf("release 2 histogram %v: want all 150 values in the overflow bin", last)
	}
	if r1.State != telemetry.StateOK && r1.State != telemetry.StateWarn {
		t.Errorf("release 1 (reference-like) state %s", r1.State)
	}
	// The shifted release: 150 requests, everything in the overflow bin.
	if r2.Requests != 150 || r2.Devices != 1 || r2.State != telemetry.StateAlert || !r2.Alert ||
		r2.Features[0].State != telemetry.StateAlert || r2.Features[0].JS != 1 {
		t.Fatalf("release 2: %+v", r2)
	}
	// Unknown baseline: statistics, no scores.
	rep, err = telemetry.DriftReport(ctx, st, baselineTable{}, f)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Releases[0]; r.State != telemetry.StateNoBaseline || r.Baseline || r.Features[0].Scored ||
		r.Features[0].Count != merged.Features[0].Count || r.Requests != merged.Requests {
		t.Fatalf("no baseline: %+v", r)
	}
	if r := rep.Releases[0]; r.Features[0].BaselineBins != nil || r.Features[0].Bins != nil {
		t.Fatalf("no baseline, yet a histogram: %+v", r.Features[0])
	}
	// A baseline binned otherwise (one more edge): no current histogram.
	other := proto.Clone(testBaseline).(*pb.DriftBaseline)
	other.Features[0].BinEdges = append(other.Features[0].BinEdges, 100)
	other.Features[0].Counts = append(other.Features[0].Counts, 0)
	rep, err = telemetry.DriftReport(ctx, st, baselineTable{"digits/1": {Drift: other, Thresholds: thr, MinRecords: 100}}, f)
	if err != nil {
		t.Fatal(err)
	}
	if h := rep.Releases[0].Features[0]; len(h.BaselineBins) != len(other.Features[0].Counts) || h.Bins != nil {
		t.Fatalf("other bins: baseline %v current %v", h.BaselineBins, h.Bins)
	}
	// Too few requests to judge: a device's single window.
	one := f
	one.DeviceID, one.ToMs = "dev-000", t0.Add(time.Minute).UnixMilli()
	rep, err = telemetry.DriftReport(ctx, st, bls, one)
	if err != nil {
		t.Fatal(err)
	}
	if r := rep.Releases[0]; r.Judged || r.State != telemetry.StateUnjudged || r.Features[0].State != telemetry.StateUnjudged {
		t.Fatalf("small window: %+v", r)
	}
}
