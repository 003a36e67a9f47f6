package metrics

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkRecord measures the buffer with its real SQLite writer, on the
// digits shape (64 features and a prediction per record):
//   - enqueue: the hot path's cost, Record alone (the queue is drained by
//     the writer meanwhile; a full queue drops and counts);
//   - written: records durably in SQLite per second, Record then Sync,
//     1000 records per transaction, packed in runs. Run with -cpu 1 for
//     the one-core figure.
func BenchmarkRecord(b *testing.B) {
	feats := make([]float64, 64)
	for i := range feats {
		feats[i] = float64(i%17) / 16
	}
	mk := func(i int) Record {
		return Record{Model: "digits", Release: 3, Version: "1.2", Slot: "a", At: time.UnixMilli(int64(1_760_000_000_000 + i)),
			Latency: 800 * time.Microsecond, OK: true, Features: feats, Predicted: float64(i % 10), HasPrediction: true}
	}
	b.Run("enqueue", func(b *testing.B) {
		buf, err := Open(context.Background(), b.TempDir(), Options{QuotaBytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		defer buf.Close()
		r := mk(0)
		b.ReportAllocs()
		for b.Loop() {
			buf.Record(r)
		}
		b.StopTimer()
		b.ReportMetric(float64(buf.dropped.Load())/float64(b.N), "dropped/op")
	})
	for _, nf := range []int{64, 4} {
		b.Run(fmt.Sprintf("written/features=%d", nf), func(b *testing.B) { benchWritten(b, mk, feats[:nf]) })
	}
}

func benchWritten(b *testing.B, mk func(int) Record, feats []float64) {
	{
		ctx := context.Background()
		buf, err := Open(ctx, b.TempDir(), Options{QuotaBytes: 1 << 30})
		if err != nil {
			b.Fatal(err)
		}
		defer buf.Close()
		const chunk = 10000
		n := 0
		for b.Loop() {
			for i := range chunk {
				r := mk(i)
				r.Features = feats
				buf.Record(r)
			}
			if err := buf.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			n += chunk
		}
		st, _ := buf.Stats(ctx)
		if st.Dropped > 0 || st.Lost > 0 {
			b.Fatalf("dropped %d lost %d", st.Dropped, st.Lost)
		}
		b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	}
}

// BenchmarkQueue is the hot path's enqueue alone, the writer's side done
// by the benchmark itself every 1,000 records (take and recycle; for the
// channel the queue used before, receive): `chunks` is the queue now,
// `chan` a channel of the same bound, allocated whole at start.
func BenchmarkQueue(b *testing.B) {
	const limit = 1 << 16
	e := entry{rec: Record{Model: "digits", Release: 3, Features: make([]float64, 64), HasPrediction: true}}
	b.Run("chunks", func(b *testing.B) {
		q := newQueue(limit)
		var taken []*chunk
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if !q.push(e) {
				b.Fatal("full")
			}
			if i++; i%1000 == 0 {
				<-q.wake
				taken = q.take(taken[:0])
				q.recycle(taken)
			}
		}
	})
	b.Run("chan", func(b *testing.B) {
		ch := make(chan entry, limit)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			select {
			case ch <- e:
			default:
				b.Fatal("full")
			}
			if i++; i%1000 == 0 {
				for range 1000 {
					<-ch
				}
			}
		}
	})
}
