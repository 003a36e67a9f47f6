package metrics

import (
	"context"
	"database/sql"
	"encoding/binary"
	"math"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/summary"
)

// TestRunsSplitAtWindowsAndSummariseExactly: one batch of two models'
// records, interleaved and crossing a window boundary, is packed into far
// fewer rows than records, no row spans a window, and each window's
// summary equals summarising exactly its records one by one.
func TestRunsSplitAtWindowsAndSummariseExactly(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, t.TempDir(), clk, func(o *Options) {
		o.Baselines = staticBaselines{"digits": testBaseline(5), "other": testBaseline(5)}
	})
	const total = 600 // 300 per model, every 300 ms: 0–90 s, 200 in the first window
	ref := map[string]*summary.Window{}
	for _, m := range []string{"digits", "other"} {
		bl := testBaseline(5)
		ref[m] = summary.NewWindow(summary.Meta{Model: m, Release: 2, Version: "1.0", Slot: "a"}, bl.Drift, epoch0.UnixMilli())
	}
	for i := range total {
		r := rec(epoch0.Add(time.Duration(i/2)*300*time.Millisecond), float64(i%3)*0.7, float64(i%2), i%7 != 0)
		r.Model = []string{"digits", "other"}[i%2]
		r.Latency = time.Duration(i) * time.Microsecond
		if i%5 == 0 {
			r.Features = []float64{math.NaN()}
			r.Missing = []bool{true}
		}
		if i%11 == 0 { // a sampling monitor function skipped it
			r.Features, r.Missing, r.Unsampled = nil, nil, true
		}
		b.Record(r)
		if r.At.Before(epoch0.Add(time.Minute)) {
			ref[r.Model].Add(summary.Record{LatencyMs: float64(i) / 1000, OK: r.OK, Features: r.Features,
				Missing: r.Missing, Prediction: r.Predicted, HasPrediction: true, Unsampled: r.Unsampled})
		}
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var rows, spanning, records int
	if err := b.db.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(n), 0),
		COALESCE(SUM(min_at_ms < window_ms OR max_at_ms >= window_ms + 60000), 0) FROM runs`).
		Scan(&rows, &records, &spanning); err != nil {
		t.Fatal(err)
	}
	// 2 models × 2 windows, 200 and 100 records each: 2 + 1 runs of ≤ 128.
	if records != total || spanning != 0 || rows != 6 {
		t.Fatalf("%d rows holding %d records, %d spanning a window; want 6, %d, 0", rows, records, spanning, total)
	}
	clk.Advance(time.Minute)
	if n, err := b.CloseWindows(ctx); err != nil || n != 2 {
		t.Fatalf("close windows: %d, %v; want 2", n, err)
	}
	var c collector
	if _, err := b.Drain(ctx, c.publish); err != nil || len(c.msgs) != 2 {
		t.Fatalf("drain: %d messages, %v", len(c.msgs), err)
	}
	for _, msg := range c.msgs {
		got := msg.GetSummaries().GetSummaries()[0]
		want := ref[got.Model].Summary(epoch0.Add(time.Minute).UnixMilli())
		if got.Requests != 200 || got.Requests != want.Requests || got.Errors != want.Errors ||
			!proto.Equal(got.Features[0], want.Features[0]) || !proto.Equal(got.Prediction, want.Prediction) ||
			!proto.Equal(got.Latency, want.Latency) {
			t.Errorf("%s: summary of the runs\n%v\nwant\n%v", got.Model, got, want)
		}
	}
	st, _ := b.Stats(ctx)
	if st.Records != 200 || st.Damaged != 0 {
		t.Fatalf("after the first window: %+v", st)
	}
}

// TestRunRoundTrip: what the packer writes decodes to the same records,
// and damage anywhere stops the decode without a panic.
func TestRunRoundTrip(t *testing.T) {
	p := packer{window: 60_000}
	p.reset()
	in := []Record{
		{Model: "m", At: epoch0.Add(5 * time.Millisecond), Latency: 1234 * time.Microsecond, OK: true,
			Features: []float64{1, 2, 255}, Predicted: 7, HasPrediction: true},
		{Model: "m", At: epoch0, Latency: 0, Features: []float64{0.5, math.Inf(1)}, Missing: []bool{false, true}},
		{Model: "m", At: epoch0.Add(59 * time.Second), OK: true},
		{Model: "m", At: epoch0.Add(30 * time.Second), OK: true, Unsampled: true},
	}
	for i := range in {
		p.add(&in[i])
	}
	if p.open != 1 {
		t.Fatalf("%d runs, want 1", p.open)
	}
	ru := p.runs[0]
	if ru.minAt != epoch0.UnixMilli() || ru.maxAt != epoch0.Add(59*time.Second).UnixMilli() || ru.n != 4 {
		t.Fatalf("run bounds %d–%d n %d", ru.minAt, ru.maxAt, ru.n)
	}
	var out []runRecord
	if k, err := decodeRun(ru.data, ru.key.window, ru.n, func(r runRecord) { out = append(out, r) }); k != 4 || err != nil {
		t.Fatalf("decoded %d, %v", k, err)
	}
	for i, r := range out {
		w := in[i]
		if r.at != w.At.UnixMilli() || r.latencyUs != w.Latency.Microseconds() || r.ok != w.OK ||
			r.hasPrediction != w.HasPrediction || r.prediction != w.Predicted || len(r.features) != len(w.Features) ||
			r.unsampled != w.Unsampled {
			t.Fatalf("record %d: %+v, want %+v", i, r, w)
		}
		for j := range r.features {
			missing := j < len(w.Missing) && w.Missing[j]
			if (j < len(r.missing) && r.missing[j]) != missing || (!missing && r.features[j] != w.Features[j]) {
				t.Fatalf("record %d feature %d: %v %v", i, j, r.features, r.missing)
			}
		}
	}
	for cut := range len(ru.data) {
		k, err := decodeRun(ru.data[:cut], ru.key.window, ru.n, func(runRecord) {})
		if err == nil || k >= 4 {
			t.Fatalf("truncated at %d: %d records, %v", cut, k, err)
		}
	}
}

// FuzzRun: no run blob, however damaged, panics the decoder or gives more
// records than the row says.
func FuzzRun(f *testing.F) {
	p := packer{window: 60_000}
	p.reset()
	r := Record{Model: "m", At: epoch0, OK: true, Features: []float64{1.5, 2}, HasPrediction: true}
	p.add(&r)
	p.add(&r)
	f.Add(p.runs[0].data, 2)
	f.Add([]byte{0, 0, 4, 0x80}, 1)
	f.Add([]byte{}, 1)
	f.Fuzz(func(t *testing.T, data []byte, n int) {
		n = min(max(n, 0), maxRunRecords)
		k, err := decodeRun(data, 0, n, func(runRecord) {})
		if k > n || (err == nil && k != n) {
			t.Fatalf("%d records of %d, %v", k, n, err)
		}
	})
}

// TestMigrateRecords: a database written before runs (one row per record)
// is packed into runs on open, its records summarised as before, including
// a row with a damaged feature blob (counted without features).
func TestMigrateRecords(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, FileName)+"?"+pragmas)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE records (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, model TEXT NOT NULL,
		release INTEGER NOT NULL, version TEXT NOT NULL, slot TEXT NOT NULL, latency_us INTEGER NOT NULL,
		ok INTEGER NOT NULL, features BLOB, prediction REAL)`); err != nil {
		t.Fatal(err)
	}
	blobs := [][]byte{encodeFeatures([]float64{0.5}, nil), {1, 2, 3}, legacyBlob(1.5), nil}
	for i, blob := range blobs {
		if _, err := db.Exec(`INSERT INTO records (at_ms, model, release, version, slot, latency_us, ok, features, prediction)
			VALUES (?, 'digits', 2, '1.0', 'a', 3000, 1, ?, ?)`, epoch0.UnixMilli()+int64(i), blob, i%2); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	clk := &fakeClock{t: epoch0}
	b := openBuffer(t, dir, clk, func(o *Options) { o.Baselines = staticBaselines{"digits": testBaseline(1)} })
	var old int
	if err := b.db.QueryRow(`SELECT COUNT(*) FROM sqlite_master WHERE name = 'records'`).Scan(&old); err != nil || old != 0 {
		t.Fatalf("old table left: %d, %v", old, err)
	}
	clk.Advance(time.Minute)
	if n, err := b.CloseWindows(ctx); n != 1 || err != nil {
		t.Fatalf("close windows: %d, %v", n, err)
	}
	var c collector
	b.Drain(ctx, c.publish)
	s := c.msgs[0].GetSummaries().GetSummaries()[0]
	if s.Requests != 4 || s.Features[0].Bins[1] != 1 || s.Features[0].Bins[2] != 1 || s.Prediction.Bins[1] != 2 {
		t.Fatalf("migrated summary: %v", s)
	}
}

// legacyBlob is one feature as stored before the compact encoding.
func legacyBlob(v float64) []byte {
	return binary.LittleEndian.AppendUint64(nil, math.Float64bits(v))
}
