package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/storetest"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

var testBaseline = &pb.DriftBaseline{Features: []*pb.FeatureBaseline{
	{Name: "x", BinEdges: []float64{0, 1, 2}, Counts: []uint64{0, 10, 10, 0}}}}

// windowSummary is device i's summary of the window at start.
func windowSummary(i int, release uint64, start time.Time) *pb.WindowSummary {
	w := summary.NewWindow(summary.Meta{Model: "digits", Release: release, Slot: "a"}, testBaseline, start.UnixMilli())
	for k := range i%4 + 1 {
		w.Add(summary.Record{LatencyMs: float64(k + 1), OK: k != 2, Features: []float64{float64(k%3) + 0.5}})
	}
	return w.Summary(start.Add(time.Minute).UnixMilli())
}

func telemetryOf(device string, seq uint64, ss ...*pb.WindowSummary) *pb.Telemetry {
	return &pb.Telemetry{DeviceId: device, Epoch: "e", Sequence: seq,
		Payload: &pb.Telemetry_Summaries{Summaries: &pb.Summaries{Summaries: ss}}}
}

func openStore(t testing.TB) *store.Store {
	st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestQueriesAndRollups: device, cohort and fleet queries equal the merge
// of the summaries stored, whether answered from raw summaries or from
// hourly and daily rollups, and stay exact when a late summary lands in a
// bucket already rolled up.
func TestQueriesAndRollups(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	storetest.Enrol(t, st, 4, func(i int) map[string]string { return map[string]string{"site": []string{"x", "y"}[i%2]} })
	in := telemetry.NewIngest(st, nil, telemetry.Options{})
	var all []*telemetry.Message
	want := map[string]*pb.WindowSummary{} // by device
	seq := uint64(0)
	for m := 0; m < 40*60; m += 13 { // 40 hours (one whole day), a window every 13 minutes
		for i := range 4 {
			dev := fmt.Sprintf("dev-%03d", i)
			seq++
			s := windowSummary(i+m, uint64(1+i/3), t0.Add(time.Duration(m)*time.Minute))
			all = append(all, telemetry.NewMessage(telemetryOf(dev, seq, s)))
		}
	}
	for i := 0; i < len(all); i += 300 {
		if err := in.Store(ctx, all[i:min(i+300, len(all))]); err != nil {
			t.Fatal(err)
		}
	}
	for _, msg := range all {
		tm := msg.Telemetry
		s := tm.GetSummaries().GetSummaries()[0]
		if w, ok := want[tm.DeviceId]; ok {
			m, err := summary.Merge(w, s)
			if err != nil {
				t.Fatal(err)
			}
			want[tm.DeviceId] = m
		} else {
			want[tm.DeviceId] = proto.Clone(s).(*pb.WindowSummary)
		}
	}
	from, to := t0.Add(-time.Hour).UnixMilli(), t0.Add(96*time.Hour).UnixMilli()
	check := func(stage string, wantRollups bool) {
		t.Helper()
		for name, f := range map[string]store.SummaryFilter{
			"device": {DeviceID: "dev-002"},
			"cohort": {Selector: map[string]string{"site": "x"}, Release: 1},
			"fleet":  {},
		} {
			f.Model, f.FromMs, f.ToMs = "digits", from, to
			res, err := telemetry.Query(ctx, st, f)
			if err != nil {
				t.Fatal(err)
			}
			var exp []*pb.WindowSummary
			for r := uint64(1); r <= 2; r++ {
				var acc *pb.WindowSummary
				for dev, w := range want {
					i := int(dev[len(dev)-1] - '0')
					if w.Release != r || (f.DeviceID != "" && dev != f.DeviceID) || (f.Selector != nil && i%2 != 0) ||
						(f.Release != 0 && r != f.Release) {
						continue
					}
					if acc == nil {
						acc = w
					} else if acc, err = summary.Merge(acc, w); err != nil {
						t.Fatal(err)
					}
				}
				if acc != nil {
					exp = append(exp, acc)
				}
			}
			if len(res.Releases) != len(exp) {
				t.Fatalf("%s %s: %d releases, want %d", stage, name, len(res.Releases), len(exp))
			}
			for k, got := range res.Releases {
				e := exp[k]
				if got.Requests != e.Requests || got.Errors != e.Errors || got.Windows != e.Windows ||
					!proto.Equal(&pb.FeatureSummary{Bins: got.Features[0].Bins, Count: got.Features[0].Count},
						&pb.FeatureSummary{Bins: e.Features[0].Bins, Count: e.Features[0].Count}) ||
					summary.SketchCount(got.Latency) != summary.SketchCount(e.Latency) {
					t.Fatalf("%s %s release %d: got %v\nwant %v", stage, name, got.Release, got, e)
				}
			}
			if wantRollups != (res.Rollups > 0) {
				t.Errorf("%s %s: %d rollup rows, %d raw", stage, name, res.Rollups, res.Raw)
			}
		}
	}
	check("raw", false)
	if err := telemetry.Rollup(ctx, st, t0.Add(50*time.Hour), telemetry.RollupOptions{}); err != nil {
		t.Fatal(err)
	}
	check("rolled up", true)
	// A late summary, in a bucket already rolled up: the answer stays exact.
	late := windowSummary(1, 1, t0.Add(90*time.Second))
	if err := in.Store(ctx, []*telemetry.Message{telemetry.NewMessage(telemetryOf("dev-000", seq+1, late))}); err != nil {
		t.Fatal(err)
	}
	m, _ := summary.Merge(want["dev-000"], late)
	want["dev-000"] = m
	check("late, dirty", false) // a dirty bucket in range: answered from raw
	if err := telemetry.Rollup(ctx, st, t0.Add(50*time.Hour), telemetry.RollupOptions{}); err != nil {
		t.Fatal(err)
	}
	check("late, rolled up again", true)
	// Retention: raw older than 7 days goes, once rolled up daily.
	n, err := telemetry.Expire(ctx, st, t0.Add(10*24*time.Hour), telemetry.Retention{})
	if err != nil || n == 0 {
		t.Fatalf("expire: %d, %v", n, err)
	}
	check("after retention", true)
}

// TestIngestHostile: a message on another device's topic, a malformed or
// invalid payload, or summaries that break the limits are refused and
// counted, and nothing is stored.
func TestIngestHostile(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	in := telemetry.NewIngest(st, nil, telemetry.Options{})
	good := telemetryOf("dev-1", 1, windowSummary(0, 1, t0))
	enc := func(m proto.Message) []byte { b, _ := wire.Encode(m); return b }
	bad := windowSummary(0, 1, t0)
	bad.Errors = bad.Requests + 1
	nan := windowSummary(0, 1, t0)
	nan.Features[0].Mean = nan.Features[0].Mean / 0 * 0
	tooMany := &pb.Summaries{}
	for range pb.MaxSummaries + 1 {
		tooMany.Summaries = append(tooMany.Summaries, windowSummary(0, 1, t0))
	}
	for name, c := range map[string]struct {
		topic   string
		payload []byte
	}{
		"other device":   {scheme.Device("telemetry", "dev-2"), enc(good)},
		"not telemetry":  {scheme.Device("heartbeat", "dev-1"), enc(good)},
		"garbage":        {scheme.Device("telemetry", "dev-1"), []byte{0xff, 0xff, 0xff}},
		"truncated":      {scheme.Device("telemetry", "dev-1"), enc(good)[:20]},
		"errors>reqs":    {scheme.Device("telemetry", "dev-1"), enc(telemetryOf("dev-1", 1, bad))},
		"nan mean":       {scheme.Device("telemetry", "dev-1"), enc(telemetryOf("dev-1", 1, nan))},
		"too many":       {scheme.Device("telemetry", "dev-1"), enc(&pb.Telemetry{DeviceId: "dev-1", Epoch: "e", Sequence: 1, Payload: &pb.Telemetry_Summaries{Summaries: tooMany}})},
		"no sequence":    {scheme.Device("telemetry", "dev-1"), enc(telemetryOf("dev-1", 0, windowSummary(0, 1, t0)))},
		"path traversal": {"flotilla/v1/dev/../telemetry", enc(good)},
	} {
		if _, err := in.Decode(c.topic, c.payload); !errors.Is(err, telemetry.ErrRejected) {
			t.Errorf("%s: decode gave %v, want ErrRejected", name, err)
		}
		in.Handle(ctx, c.topic, c.payload)
	}
	if got := in.Counters.Rejected.Load(); got != 9 {
		t.Errorf("rejected %d, want 9", got)
	}
	if rows, _ := st.ListSummaries(ctx, store.SummaryFilter{Model: "digits", ToMs: 1 << 62}); len(rows) != 0 {
		t.Fatalf("%d summaries stored from hostile input", len(rows))
	}
	if m, err := in.Decode(scheme.Device("telemetry", "dev-1"), enc(good)); err != nil || m == nil {
		t.Fatalf("good message refused: %v", err)
	}
}

// BenchmarkIngest is control-plane ingest into SQLite, in summaries per
// second: decode (the MQTT callback's share: wire.Decode, validation,
// slicing the summaries' bytes out) and store (batches of 500 messages per
// transaction), separately and together, for a digits-sized summary (64
// features of 17 bins) and a small one (4 features).
func BenchmarkIngest(b *testing.B) {
	for _, features := range []int{64, 4} {
		s := benchSummary(features)
		for _, stage := range []string{"decode", "store", "decode+store"} {
			b.Run(fmt.Sprintf("features=%d/%s", features, stage), func(b *testing.B) { benchIngest(b, s, stage) })
		}
	}
}

func benchSummary(features int) *pb.WindowSummary {
	bl := &pb.DriftBaseline{}
	for f := range features {
		edges := make([]float64, 16)
		for i := range edges {
			edges[i] = float64(i) / 16
		}
		bl.Features = append(bl.Features, &pb.FeatureBaseline{Name: fmt.Sprint("p", f), BinEdges: edges, Counts: make([]uint64, 17)})
	}
	w := summary.NewWindow(summary.Meta{Model: "digits", Release: 1, Slot: "a"}, bl, t0.UnixMilli())
	for k := range 100 {
		feats := make([]float64, features)
		for i := range feats {
			feats[i] = float64((k+i)%17) / 16
		}
		w.Add(summary.Record{LatencyMs: float64(k%20 + 1), OK: true, Features: feats})
	}
	return w.Summary(t0.Add(time.Minute).UnixMilli())
}

func benchIngest(b *testing.B, s *pb.WindowSummary, stage string) {
	ctx := context.Background()
	st := openStore(b)
	in := telemetry.NewIngest(st, nil, telemetry.Options{})
	const batch = 500
	payloads := make([][]byte, batch)
	topics := make([]string, batch)
	decoded := make([]*telemetry.Message, batch)
	size, _ := wire.Encode(s)
	seq := uint64(0)
	n := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer() // the devices' work: encoding
		for i := range payloads {
			seq++
			dev := fmt.Sprintf("dev-%05d", seq%1000)
			payloads[i], _ = wire.Encode(telemetryOf(dev, seq, s))
			topics[i] = scheme.Device("telemetry", dev)
			if stage == "store" {
				decoded[i], _ = in.Decode(topics[i], payloads[i])
			}
		}
		b.StartTimer()
		if stage != "store" {
			for i := range payloads {
				m, err := in.Decode(topics[i], payloads[i])
				if err != nil {
					b.Fatal(err)
				}
				decoded[i] = m
			}
		}
		if stage != "decode" {
			if err := in.Store(ctx, decoded); err != nil {
				b.Fatal(err)
			}
		}
		n += batch
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "summaries/s")
	b.ReportMetric(float64(len(size)), "bytes/summary")
}

// BenchmarkIngestPipeline is the whole ingest as the server runs it, in
// summaries per second from the first message taken in to the last one
// acknowledged after its commit: "callback" is the path before issue 10
// (each message decoded on the MQTT callback's goroutine, one at a time,
// then queued for the store), "decoders" Offer queuing the raw message for
// Run's decoders (GOMAXPROCS of them, by device) beside the store's
// transaction. 2000 messages of one summary each per iteration, from 1000
// devices, into one SQLite store per sub-benchmark.
func BenchmarkIngestPipeline(b *testing.B) {
	for _, features := range []int{64, 4} {
		s := benchSummary(features)
		for _, path := range []string{"callback", "decoders"} {
			b.Run(fmt.Sprintf("features=%d/%s", features, path), func(b *testing.B) { benchPipeline(b, s, path) })
		}
	}
}

// benchFleet encodes batches of telemetry messages as 1,000 devices send
// them, one sequence after another.
type benchFleet struct {
	payloads [][]byte
	topics   []string
	seq      uint64
}

func newBenchFleet(batch int) *benchFleet {
	return &benchFleet{payloads: make([][]byte, batch), topics: make([]string, batch)}
}

// next encodes the next batch, each message carrying s.
func (f *benchFleet) next(s *pb.WindowSummary) (payloads [][]byte, topics []string) {
	for i := range f.payloads {
		f.seq++
		dev := fmt.Sprintf("dev-%05d", f.seq%1000)
		f.payloads[i], _ = wire.Encode(telemetryOf(dev, f.seq, s))
		f.topics[i] = scheme.Device("telemetry", dev)
	}
	return f.payloads, f.topics
}

func benchPipeline(b *testing.B, s *pb.WindowSummary, path string) {
	const batch = 2000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Uint64
	in := telemetry.NewIngest(openStore(b), func(_ context.Context, _ string, a *pb.Ack) error {
		acked.Add(uint64(len(a.GetSequences())))
		return nil
	}, telemetry.Options{QueueSize: batch * runtime.GOMAXPROCS(0)}) // room for every message of an iteration
	done := make(chan error, 1)
	go func() { done <- in.Run(ctx) }()
	fl := newBenchFleet(batch)
	n := 0
	for b.Loop() {
		b.StopTimer() // the devices' work: encoding
		payloads, topics := fl.next(s)
		b.StartTimer()
		for i := range payloads {
			if path == "callback" {
				in.Handle(ctx, topics[i], payloads[i])
			} else {
				in.Offer(topics[i], payloads[i])
			}
		}
		n += batch
		for acked.Load() < uint64(n) {
			if in.Counters.Overloaded.Load() > 0 || in.Counters.Rejected.Load() > 0 {
				b.Fatalf("overloaded %d, rejected %d", in.Counters.Overloaded.Load(), in.Counters.Rejected.Load())
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "summaries/s")
	cancel()
	<-done
}
