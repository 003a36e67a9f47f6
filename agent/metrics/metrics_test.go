package metrics

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"testing"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// fakeClock is the injected clock.
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

var epoch0 = time.UnixMilli(1_760_000_040_000) // a window boundary (60 s)

type staticBaselines map[string]Baseline

func (s staticBaselines) Baseline(model string, _ uint64) (Baseline, bool) {
	b, ok := s[model]
	return b, ok
}

func testBaseline(minRecords uint64) Baseline {
	return Baseline{
		Drift: &pb.DriftBaseline{
			Features:   []*pb.FeatureBaseline{{Name: "x", BinEdges: []float64{0, 1, 2}, Counts: []uint64{0, 50, 50, 0}}},
			Prediction: &pb.FeatureBaseline{Name: "class", Categories: []string{"0", "1"}, Counts: []uint64{50, 50, 0}},
		},
		Thresholds: summary.EffectiveThresholds(&pb.DriftThresholds{Js: 0.5}, nil),
		MinRecords: minRecords,
		Version:    "1.0",
	}
}

func openBuffer(t testing.TB, dir string, clk *fakeClock, mod func(*Options)) *Buffer {
	t.Helper()
	opt := Options{Now: clk.Now, Baselines: staticBaselines{"digits": testBaseline(5)}, MessagesPerSecond: 1000,
		AckTimeout: 10 * time.Second, MaxInFlight: 4}
	if mod != nil {
		mod(&opt)
	}
	b, err := Open(context.Background(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	b.SetDevice("dev-1")
	t.Cleanup(func() { b.Close() })
	return b
}

func rec(at time.Time, x float64, class float64, ok bool) Record {
	return Record{Model: "digits", Release: 2, Slot: "a", At: at, Latency: 3 * time.Millisecond, OK: ok,
		Features: []float64{x}, Predicted: class, HasPrediction: true}
}

// collector is a Publish that keeps what it was given.
type collector struct {
	mu   sync.Mutex
	msgs []*pb.Telemetry
	fail error
}

func (c *collector) publish(_ context.Context, t *pb.Telemetry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return c.fail
	}
	c.msgs = append(c.msgs, t)
	return nil
}

func TestWindowsAndOutbox(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, nil)
	// Window 1: 6 records (≥ the minimum 5). Window 2: 2 records, carried
	// forward into window 3 with 4 more.
	for i := range 6 {
		b.Record(rec(epoch0.Add(time.Duration(i)*time.Second), 0.5, 0, i != 5))
	}
	for i := range 2 {
		b.Record(rec(epoch0.Add(61*time.Second+time.Duration(i)), 1.5, 1, true))
	}
	for i := range 4 {
		b.Record(rec(epoch0.Add(130*time.Second+time.Duration(i)), math.NaN(), 1, true))
	}
	clk.Advance(119 * time.Second) // window 2 still open
	if n, err := b.CloseWindows(ctx); err != nil || n != 1 {
		t.Fatalf("close windows: %d, %v; want 1 summary", n, err)
	}
	clk.Advance(61 * time.Second) // window 3 closed; window 2 carried into it
	if n, err := b.CloseWindows(ctx); err != nil || n != 1 {
		t.Fatalf("close windows: %d, %v; want 1 summary", n, err)
	}
	var c collector
	if n, err := b.Drain(ctx, c.publish); err != nil || n != 2 {
		t.Fatalf("drain: %d, %v", n, err)
	}
	s1 := c.msgs[0].GetSummaries().GetSummaries()[0]
	s2 := c.msgs[1].GetSummaries().GetSummaries()[0]
	if c.msgs[0].Sequence >= c.msgs[1].Sequence || c.msgs[0].Epoch != b.Epoch() || c.msgs[0].DeviceId != "dev-1" {
		t.Fatalf("envelopes %v %v", c.msgs[0], c.msgs[1])
	}
	if s1.StartMs != epoch0.UnixMilli() || s1.EndMs != epoch0.UnixMilli()+60_000 || s1.Requests != 6 || s1.Errors != 1 ||
		s1.Features[0].Bins[1] != 5 || s1.Prediction.Bins[0] != 5 || !s1.Scores.Judged || s1.Version != "1.0" {
		t.Errorf("first summary: %v", s1)
	}
	if s2.StartMs != epoch0.UnixMilli()+60_000 || s2.EndMs != epoch0.UnixMilli()+180_000 || s2.Requests != 6 ||
		s2.Features[0].Nan != 4 || s2.Features[0].Bins[2] != 2 || s2.Prediction.Bins[1] != 6 || !s2.Scores.Judged {
		t.Errorf("carried-forward summary: %v", s2)
	}
	// Nothing more is due until the ack timeout; then both are resent, in order.
	if n, _ := b.Drain(ctx, c.publish); n != 0 {
		t.Fatalf("resent %d before the ack timeout", n)
	}
	clk.Advance(11 * time.Second)
	if n, _ := b.Drain(ctx, c.publish); n != 2 || c.msgs[2].Sequence != c.msgs[0].Sequence {
		t.Fatalf("resend: %d", n)
	}
	// An ack of another epoch or device changes nothing; the right one removes.
	for _, a := range []*pb.Ack{
		{DeviceId: "dev-1", Epoch: "other", Sequences: []uint64{c.msgs[0].Sequence}},
		{DeviceId: "dev-2", Epoch: b.Epoch(), Sequences: []uint64{c.msgs[0].Sequence}},
	} {
		if n, err := b.Ack(ctx, a); n != 0 || err != nil {
			t.Fatalf("foreign ack removed %d, %v", n, err)
		}
	}
	if n, err := b.Ack(ctx, &pb.Ack{DeviceId: "dev-1", Epoch: b.Epoch(), Sequences: []uint64{c.msgs[0].Sequence, c.msgs[1].Sequence}}); n != 2 || err != nil {
		t.Fatalf("ack removed %d, %v", n, err)
	}
	st, _ := b.Stats(ctx)
	if st.Pending != 0 || st.Records != 0 || st.Buffered != 12 || st.Summaries != 2 || st.Acked != 2 || st.Sent != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCarryForwardCap(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) { o.MaxCarry = 3 })
	b.Record(rec(epoch0, 0.5, 0, true))
	clk.Advance(2 * time.Minute)
	if n, _ := b.CloseWindows(ctx); n != 0 {
		t.Fatalf("a 1-record window was summarised after 2 windows")
	}
	clk.Advance(time.Minute)
	if n, _ := b.CloseWindows(ctx); n != 1 {
		t.Fatalf("not summarised after MaxCarry windows")
	}
	var c collector
	b.Drain(ctx, c.publish)
	s := c.msgs[0].GetSummaries().GetSummaries()[0]
	if s.Scores.Judged || s.Requests != 1 || s.EndMs-s.StartMs != 180_000 {
		t.Fatalf("capped window: %v", s)
	}
}

func TestHotPathNeverBlocks(t *testing.T) {
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) { o.QueueSize = 100 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Hold the database's one connection: the writer cannot write. The
	// test owns it until release; the cleanup, registered after
	// openBuffer's and so run before Close, gives it back even when an
	// assertion fails — else Close would wait forever for a writer that
	// waits for this connection.
	conn, err := b.db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release := func() { once.Do(func() { conn.Close() }) }
	t.Cleanup(release)
	waits := b.db.Stats().WaitCount
	// The writer takes the record and waits for the connection. Only once
	// the pool counts it waiting is it sure to take no more off the queue
	// (an empty queue alone is not: it may still be emptying it).
	b.Record(rec(epoch0, 1, 0, true))
	for b.db.Stats().WaitCount == waits {
		if ctx.Err() != nil {
			t.Fatal("the writer never waited for the connection")
		}
		time.Sleep(time.Millisecond)
	}
	for range 150 {
		b.Record(rec(epoch0, 1, 0, true)) // must return at once
	}
	if d := b.dropped.Load(); d != 50 {
		t.Fatalf("dropped %d, want 50", d)
	}
	if st := b.lost.Load(); st != 0 {
		t.Fatalf("lost %d", st)
	}
	release()
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := b.Stats(ctx)
	if st.Buffered != 101 || st.Dropped != 50 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSyncAfterClose: a Sync racing or following Close returns ErrClosed
// (or nil when its marker was written) rather than waiting forever on a
// marker queued after the writer stopped.
func TestSyncAfterClose(t *testing.T) {
	b, err := Open(context.Background(), t.TempDir(), Options{Now: (&fakeClock{t: epoch0}).Now})
	if err != nil {
		t.Fatal(err)
	}
	b.Record(rec(epoch0, 1, 0, true))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// Each Sync finds both its send and the closed done ready, and picks
	// one at random: 100 tries miss the send with odds of 2^-100.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 100 {
		if err := b.Sync(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("sync after close: %v, want ErrClosed", err)
		}
	}
}

func TestQuotaEvictsOldestAndKeepsServing(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) { o.QuotaBytes = 512 << 10 })
	// Records of 64 float32 features (≈ 270 bytes packed): 10,000 of them
	// are five times the quota.
	feats := make([]float64, 64)
	for j := range feats {
		feats[j] = float64(j) + 0.5
	}
	const total = 10000
	for i := range total {
		r := rec(epoch0.Add(time.Duration(i)*time.Millisecond), 1, 0, true)
		r.Features = feats
		b.Record(r)
		if i%1000 == 999 {
			b.Sync(ctx)
		}
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.EvictedRecords == 0 || st.DatabaseBytes > 512<<10 {
		t.Fatalf("quota not enforced: %+v", st)
	}
	if got := uint64(st.Records) + st.EvictedRecords + st.Lost + st.Dropped; got != total {
		t.Fatalf("records %d + evicted %d + lost %d + dropped %d = %d, want all", st.Records, st.EvictedRecords, st.Lost, st.Dropped, got)
	}
	// The newest records survive: eviction is oldest first.
	var newest int64
	b.db.QueryRowContext(ctx, `SELECT MAX(max_at_ms) FROM runs`).Scan(&newest)
	if newest != epoch0.Add((total-1)*time.Millisecond).UnixMilli() {
		t.Fatalf("newest record %d evicted", newest)
	}
	t.Logf("stats after 10000 records into a 512 KiB quota: %+v", st)
}

func TestBudgetCoarsens(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	// A budget of 40 KiB a day: a burst of ~1.7 KiB an hour.
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) { o.BudgetBytesPerDay = 40 << 10 })
	const windows = 120
	for w := range windows {
		for i := range 5 {
			b.Record(rec(epoch0.Add(time.Duration(w)*time.Minute+time.Duration(i)*time.Second), 0.5, 0, true))
		}
	}
	clk.Advance(windows * time.Minute)
	if _, err := b.CloseWindows(ctx); err != nil {
		t.Fatal(err)
	}
	var c collector
	for range 50 {
		if _, err := b.Drain(ctx, c.publish); err != nil {
			t.Fatal(err)
		}
		for _, m := range c.msgs {
			b.Ack(ctx, &pb.Ack{DeviceId: "dev-1", Epoch: b.Epoch(), Sequences: []uint64{m.Sequence}})
		}
		clk.Advance(30 * time.Minute)
	}
	st, _ := b.Stats(ctx)
	if st.Coarsened == 0 || st.Pending != 0 {
		t.Fatalf("backlog not coarsened and drained: %+v", st)
	}
	// Nothing is lost by coarsening: every request arrives, once.
	var requests uint64
	var lastEnd int64
	for _, m := range c.msgs {
		for _, s := range m.GetSummaries().GetSummaries() {
			requests += s.Requests
			if s.StartMs < lastEnd {
				t.Fatalf("windows out of order or overlapping: %d < %d", s.StartMs, lastEnd)
			}
			lastEnd = s.EndMs
		}
	}
	if requests != windows*5 || len(c.msgs) >= windows {
		t.Fatalf("%d requests in %d messages; want %d in fewer than %d", requests, len(c.msgs), windows*5, windows)
	}
	t.Logf("%d windows reached the control plane as %d messages (%d coarsened)", windows, len(c.msgs), st.Coarsened)
}

func TestReopenKeepsOutboxAndEpoch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	clk := &fakeClock{t: epoch0}
	b, err := Open(ctx, dir, Options{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	b.Record(rec(epoch0, 0.5, 0, true))
	clk.Advance(time.Minute)
	b.Close() // writes what is queued
	b2 := openBuffer(t, dir, clk, nil)
	if b2.Epoch() != b.Epoch() {
		t.Fatal("epoch changed on reopen")
	}
	clk.Advance(10 * time.Minute) // past the carry-forward cap of the 1-record window
	if n, err := b2.CloseWindows(ctx); n != 1 || err != nil {
		t.Fatalf("records lost across reopen: %d, %v", n, err)
	}
	var c collector
	c.fail = errors.New("offline")
	if _, err := b2.Drain(ctx, c.publish); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	c.fail = nil
	if n, _ := b2.Drain(ctx, c.publish); n != 1 {
		t.Fatal("a failed publish was not retried at once")
	}
}

func TestFeatureBlob(t *testing.T) {
	f := []float64{1, math.NaN(), math.Inf(-1), 4}
	got, missing, err := decodeFeatures(encodeFeatures(f, []bool{false, false, false, true}))
	if err != nil || len(got) != 4 || got[0] != 1 || !math.IsNaN(got[1]) || missing[1] || !missing[3] || !math.IsInf(got[2], -1) {
		t.Fatalf("round trip: %v %v %v", got, missing, err)
	}
	// Each encoding gives its values back bit for bit, in its size; the
	// layout before (n float64s) still decodes.
	pixels := make([]float64, 64)
	for i := range pixels {
		pixels[i] = float64(i % 17)
	}
	f32 := []float64{0.5, -3.25, float64(float32(0.1)), float64(float32(1e30))}
	negZero := math.Copysign(0, -1)
	f64 := []float64{0.1, 255, negZero}
	for _, c := range []struct {
		f    []float64
		kind byte
		size int
	}{{pixels, blobUint8, 1 + 1 + 64}, {f32, blobFloat32, 1 + 1 + 16}, {f64, blobFloat64, 1 + 1 + 24}, {[]float64{negZero}, blobFloat32, 1 + 1 + 4}, {nil, blobUint8, 2}} {
		b := encodeFeatures(c.f, nil)
		got, missing, err := decodeFeatures(b)
		if err != nil || b[0] != c.kind || len(b) != c.size || len(got) != len(c.f) || missing != nil {
			t.Fatalf("%v: blob %x (%d bytes), got %v %v %v", c.f, b, len(b), got, missing, err)
		}
		for i := range got {
			if math.Float64bits(got[i]) != math.Float64bits(c.f[i]) {
				t.Fatalf("%v: element %d came back %v", c.f, i, got[i])
			}
		}
	}
	legacy := binary.LittleEndian.AppendUint64(binary.LittleEndian.AppendUint64(nil, math.Float64bits(0.1)), missingBits)
	if got, missing, err := decodeFeatures(legacy); err != nil || len(got) != 2 || got[0] != 0.1 || !missing[1] {
		t.Fatalf("legacy blob: %v %v %v", got, missing, err)
	}
	padded := encodeFeatures(make([]float64, 6), nil) // 1+1+6 = 8: one zero byte more
	for _, bad := range [][]byte{{1, 2, 3}, make([]byte, 8*maxFeatures+8), {9, 1, 0}, {blobUint8, 5, 1, 2},
		{blobFloat32, 0x80}, append(padded[:len(padded)-1:len(padded)-1], 7), append(padded, 0),
		append(binary.AppendUvarint([]byte{blobUint8}, maxFeatures+1), 0)} {
		if _, _, err := decodeFeatures(bad); err == nil {
			t.Errorf("decoded the blob %x", bad)
		}
	}
}

// FuzzFeatureBlob: any blob decodes or is refused without panicking, and
// what decodes encodes back to a blob that decodes to the same values.
func FuzzFeatureBlob(f *testing.F) {
	f.Add(encodeFeatures([]float64{1, 2, 3}, nil))
	f.Add(encodeFeatures([]float64{0.5, 1e30}, nil))
	f.Add(encodeFeatures([]float64{0.1, 2}, []bool{true, false}))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, missing, err := decodeFeatures(b)
		if err != nil {
			return
		}
		again, missing2, err := decodeFeatures(encodeFeatures(got, missing))
		if err != nil || len(again) != len(got) || len(missing2) != len(missing) {
			t.Fatalf("%x: re-encoded gives %v %v %v", b, again, missing2, err)
		}
		for i := range got {
			if math.Float64bits(again[i]) != math.Float64bits(got[i]) && !(i < len(missing) && missing[i]) {
				t.Fatalf("%x: element %d %v became %v", b, i, got[i], again[i])
			}
		}
	})
}

// TestDiskFullCountsAndServes: records that cannot fit even after eviction
// (here a batch larger than the whole quota) are counted as lost, the error
// is reported, and the buffer goes on accepting records.
func TestDiskFullCountsAndServes(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) { o.QuotaBytes = 64 << 10; o.BatchSize = 100 })
	big := make([]float64, maxFeatures)
	for range 100 {
		r := rec(epoch0, 1, 0, true)
		r.Features = big
		b.Record(r)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b.Record(rec(epoch0, 1, 0, true))
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := b.Stats(ctx)
	if st.Lost == 0 || st.Buffered == 0 || st.Lost+st.Buffered+st.Dropped != 101 || st.LastWriteError == "" {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("lost %d, buffered %d; error %q", st.Lost, st.Buffered, st.LastWriteError)
}
