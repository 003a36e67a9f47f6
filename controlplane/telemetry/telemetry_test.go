package telemetry_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

var t0 = time.UnixMilli(1_760_000_400_000).UTC().Truncate(24 * time.Hour)

type oneBaseline struct{}

func (oneBaseline) Baseline(string, uint64) (metrics.Baseline, bool) {
	return metrics.Baseline{
		Drift: &pb.DriftBaseline{Features: []*pb.FeatureBaseline{
			{Name: "x", BinEdges: []float64{0, 1, 2}, Counts: []uint64{0, 10, 10, 0}}}},
		Thresholds: summary.EffectiveThresholds(nil, nil),
		MinRecords: 1,
		Version:    "1.0",
	}, true
}

type totals struct{ requests, errors, x uint64 }

// offlineDay fills a device's buffer with a day of traffic, closing
// windows every hour on the simulated clock, never draining.
func offlineDay(t *testing.T, clk *fakeClock, buf *metrics.Buffer, minutes int) totals {
	ctx := context.Background()
	var tot totals
	for m := range minutes {
		for i := range m%5 + 1 {
			ok := (m+i)%7 != 0
			buf.Record(metrics.Record{Model: "digits", Release: 4, Slot: "b", At: clk.Now().Add(time.Duration(i) * time.Second),
				Latency: time.Duration(1+i) * time.Millisecond, OK: ok, Features: []float64{float64(i % 3)}})
			tot.requests++
			if !ok {
				tot.errors++
			} else {
				tot.x++
			}
		}
		clk.Advance(time.Minute)
		if m%60 == 59 {
			if _, err := buf.CloseWindows(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := buf.CloseWindows(ctx); err != nil {
		t.Fatal(err)
	}
	return tot
}

func openDevice(t *testing.T, clk *fakeClock, id string) *deviceSide {
	buf, err := metrics.Open(context.Background(), t.TempDir(), metrics.Options{Now: clk.Now, Baselines: oneBaseline{},
		MaxInFlight: 64, AckTimeout: 30 * time.Second, MessagesPerSecond: 1000})
	if err != nil {
		t.Fatal(err)
	}
	buf.SetDevice(id)
	t.Cleanup(func() { buf.Close() })
	return &deviceSide{id: id, buf: buf}
}

// drainRound publishes what is due and waits for the acks to settle.
func drainRound(t *testing.T, d *deviceSide) int {
	n, err := d.buf.Drain(context.Background(), d.publish)
	if err != nil {
		t.Fatal(err)
	}
	last, stable := -1, 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) && stable < 5; {
		time.Sleep(10 * time.Millisecond)
		d.mu.Lock()
		a := d.acked
		d.mu.Unlock()
		if a == last {
			stable++
		} else {
			last, stable = a, 0
		}
	}
	return n
}

func pending(t *testing.T, d *deviceSide) int64 {
	st, err := d.buf.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Pending
}

// checkExactlyOnce: the store holds one summary per window, in sequence
// and time order, and the fleet query's totals equal the device's.
func checkExactlyOnce(t *testing.T, st *store.Store, minutes int, want totals) {
	ctx := context.Background()
	f := store.SummaryFilter{Model: "digits", FromMs: t0.UnixMilli(), ToMs: t0.Add(48 * time.Hour).UnixMilli()}
	rows, err := st.ListSummaries(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != minutes {
		t.Fatalf("%d summaries stored, want %d (one per window)", len(rows), minutes)
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].Sequence <= rows[i-1].Sequence || rows[i].StartMs != rows[i-1].EndMs {
			t.Fatalf("summary %d: sequence %d after %d, start %d after end %d", i, rows[i].Sequence, rows[i-1].Sequence,
				rows[i].StartMs, rows[i-1].EndMs)
		}
	}
	res, err := telemetry.Query(ctx, st, f)
	if err != nil {
		t.Fatal(err)
	}
	s := res.Releases[0]
	if len(res.Releases) != 1 || s.Requests != want.requests || s.Errors != want.errors ||
		s.Features[0].Count != want.x || summary.SketchCount(s.Latency) != want.requests || s.Windows != uint32(minutes) {
		t.Fatalf("fleet totals: requests %d errors %d x %d windows %d; device: %+v over %d windows",
			s.Requests, s.Errors, s.Features[0].Count, s.Windows, want, minutes)
	}
}

// TestOfflineThenReconnect: a device offline for 4 hours on a simulated
// clock keeps summarising; on reconnect the backlog drains in order through
// a real broker into real SQLite, every summary exactly once, although some
// acks are lost on the way back (those messages are resent and
// acknowledged as duplicates).
func TestOfflineThenReconnect(t *testing.T) {
	const minutes = 4 * 60
	clk := &fakeClock{t: t0}
	d := openDevice(t, clk, "dev-7")
	want := offlineDay(t, clk, d.buf, minutes)
	if p := pending(t, d); p != minutes {
		t.Fatalf("%d pending after a day offline, want %d", p, minutes)
	}
	url := startBroker(t)
	var mu sync.Mutex
	seen := map[uint64]bool{}
	ctl := startControl(t, url, filepath.Join(t.TempDir(), "cp.db"), func(a *pb.Ack) bool {
		mu.Lock()
		defer mu.Unlock()
		first := !seen[a.Sequences[0]]
		seen[a.Sequences[0]] = true
		return first && a.Sequences[0]%7 == 0 // lose the first ack of some batches
	})
	defer ctl.stop()
	connectDevice(t, url, d)
	for round := 0; pending(t, d) > 0; round++ {
		if round > 2000 {
			t.Fatalf("drain stuck with %d pending", pending(t, d))
		}
		if drainRound(t, d) == 0 {
			clk.Advance(31 * time.Second) // past the ack timeout: resend
		}
		clk.Advance(time.Second)
	}
	checkExactlyOnce(t, ctl.st, minutes, want)
	if ctl.in.Counters.Duplicates.Load() == 0 {
		t.Error("no duplicate was received: the lost acks did not cause resends")
	}
	t.Logf("stored %d, duplicates %d, acked %d", ctl.in.Counters.Stored.Load(), ctl.in.Counters.Duplicates.Load(), ctl.in.Counters.Acked.Load())
}

// TestIngestRestartMidDrain: the control plane goes down abruptly halfway
// through a drain (messages published meanwhile go nowhere) and comes back
// on the same database: nothing is lost and nothing doubled.
func TestIngestRestartMidDrain(t *testing.T) {
	const minutes = 3 * 60
	clk := &fakeClock{t: t0}
	d := openDevice(t, clk, "dev-8")
	want := offlineDay(t, clk, d.buf, minutes)
	url := startBroker(t)
	db := filepath.Join(t.TempDir(), "cp.db")
	ctl := startControl(t, url, db, nil)
	connectDevice(t, url, d)
	for pending(t, d) > minutes/2 {
		drainRound(t, d)
		clk.Advance(time.Second)
	}
	ctl.stop()
	for range 3 { // the device keeps sending into the void
		drainRound(t, d)
		clk.Advance(time.Second)
	}
	ctl = startControl(t, url, db, nil)
	defer ctl.stop()
	for round := 0; pending(t, d) > 0; round++ {
		if round > 2000 {
			t.Fatalf("drain stuck with %d pending", pending(t, d))
		}
		if drainRound(t, d) == 0 {
			clk.Advance(31 * time.Second)
		}
		clk.Advance(time.Second)
	}
	checkExactlyOnce(t, ctl.st, minutes, want)
}
