package telemetry_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// BenchmarkIngestReplicas is issue 11's comparison: summary ingest by 1,
// 2 and 3 control-plane replicas sharing one PostgreSQL database, beside
// one replica on SQLite, in the same run. Each replica is what a server
// runs — its own store (connection pool) and its own Ingest with its
// decoders — and messages are dealt to the replicas in turn, as an MQTT
// shared subscription ($share/…) deals them. Digits-sized summaries (64
// features), 1,000 devices. On one machine the replicas, the database
// and the benchmark share the cores: the figure says what the database
// sustains from several writers, not what separate machines would add.
func BenchmarkIngestReplicas(b *testing.B) {
	s := benchSummary(64)
	b.Run("sqlite/replicas=1", func(b *testing.B) {
		benchReplicas(b, s, []*store.Store{openStore(b)})
	})
	for _, n := range []int{1, 2, 3} {
		b.Run(fmt.Sprintf("postgres/replicas=%d", n), func(b *testing.B) {
			dsn := pgtest.Database(b)
			var sts []*store.Store
			for range n {
				st, err := store.OpenPostgres(context.Background(), dsn)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				sts = append(sts, st)
			}
			benchReplicas(b, s, sts)
		})
	}
}

func benchReplicas(b *testing.B, s *pb.WindowSummary, sts []*store.Store) {
	const batch = 2000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var acked atomic.Uint64
	var ins []*telemetry.Ingest
	var done []chan error
	for _, st := range sts {
		in := telemetry.NewIngest(st, func(_ context.Context, _ string, a *pb.Ack) error {
			acked.Add(uint64(len(a.GetSequences())))
			return nil
		}, telemetry.Options{QueueSize: batch * runtime.GOMAXPROCS(0)})
		d := make(chan error, 1)
		go func() { d <- in.Run(ctx) }()
		ins, done = append(ins, in), append(done, d)
	}
	fl := newBenchFleet(batch)
	n := 0
	for b.Loop() {
		b.StopTimer() // the devices' work: encoding
		payloads, topics := fl.next(s)
		b.StartTimer()
		for i := range payloads {
			ins[i%len(ins)].Offer(topics[i], payloads[i])
		}
		n += batch
		for acked.Load() < uint64(n) {
			for _, in := range ins {
				if in.Counters.Overloaded.Load() > 0 || in.Counters.Rejected.Load() > 0 {
					b.Fatalf("overloaded %d, rejected %d", in.Counters.Overloaded.Load(), in.Counters.Rejected.Load())
				}
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "summaries/s")
	cancel()
	for _, d := range done {
		<-d
	}
}
