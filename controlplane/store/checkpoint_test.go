package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// telemetryBatch is n messages of one summary each, with payloads of size
// bytes (random, as incompressible as SQLite sees any blob), for devices
// dev-0000.. and sequences from seq on.
func telemetryBatch(n, size int, seq uint64) []TelemetryMessage {
	msgs := make([]TelemetryMessage, n)
	for i := range msgs {
		p := make([]byte, size)
		_, _ = rand.Read(p)
		seq++
		msgs[i] = TelemetryMessage{DeviceID: fmt.Sprintf("dev-%04d", seq%1000), Epoch: "e", Sequence: seq, ReceivedAt: 1,
			Summaries: []StoredSummary{{Model: "digits", Release: 1, Slot: "a", StartMs: int64(seq) * 60000,
				EndMs: int64(seq+1) * 60000, Requests: 100, Payload: p}}}
	}
	return msgs
}

// TestCheckpointerCopiesTheLog: with the writer's own automatic checkpoint
// moved far out (64 MiB), what the writer commits still reaches the
// database file: the checkpointer copies it there.
func TestCheckpointerCopiesTheLog(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "cp.db")
	s, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	const n, size = 500, 8 << 10 // 4 MB: past SQLite's default 1000-page threshold, short of the writer's backstop
	if _, err := s.StoreTelemetry(ctx, telemetryBatch(n, size, 0)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size()-before.Size() >= n*size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database file grew %d bytes, want at least %d: the log was not checkpointed", st.Size()-before.Size(), n*size)
		}
	}
	rows, err := s.SummariesBetween(ctx, 0, 1<<62)
	if err != nil || len(rows) != n {
		t.Fatalf("%d summaries read back (%v), want %d", len(rows), err, n)
	}
}

// BenchmarkTelemetryStore stores digits-sized summaries (3,717 bytes)
// 500 messages per transaction, side by side: "before" as the store did
// before issue 10 (SQLite's automatic checkpoint in the writer's commits,
// the multi-row INSERTs parsed in every transaction), "prepared" with the
// INSERTs prepared once, "checkpointer" prepared and with the checkpointer.
func BenchmarkTelemetryStore(b *testing.B) {
	for _, mode := range []string{"before", "prepared", "checkpointer"} {
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			s, err := openSQLite(ctx, filepath.Join(b.TempDir(), "cp.db"), mode != "checkpointer")
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			s.stmts.off = mode == "before"
			seq := uint64(0)
			n := 0
			for b.Loop() {
				b.StopTimer()
				msgs := telemetryBatch(500, 3717, seq)
				seq += 500
				b.StartTimer()
				if _, err := s.StoreTelemetry(ctx, msgs); err != nil {
					b.Fatal(err)
				}
				n += len(msgs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "summaries/s")
		})
	}
}

// TestTelemetryPreparedInserts: batches of the prepared statements' full
// size still de-duplicate exactly: a second batch overlapping the first
// by half stores only its new half, and a batch repeating a message
// within itself stores it once.
func TestTelemetryPreparedInserts(t *testing.T) {
	ctx := context.Background()
	s, err := OpenSQLite(ctx, filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	first := telemetryBatch(2*receivedPerInsert, 64, 0)
	second := append(telemetryBatch(2*receivedPerInsert, 64, receivedPerInsert), first[0])
	for i, c := range []struct {
		msgs []TelemetryMessage
		dups int
	}{{first, 0}, {second, receivedPerInsert + 1}} {
		dup, err := s.StoreTelemetry(ctx, c.msgs)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for j, d := range dup {
			if d {
				n++
			}
			if want := i == 1 && (j < receivedPerInsert || j == len(dup)-1); d != want {
				t.Fatalf("batch %d message %d (seq %d): dup %v", i, j, c.msgs[j].Sequence, d)
			}
		}
		if n != c.dups {
			t.Fatalf("batch %d: %d duplicates, want %d", i, n, c.dups)
		}
	}
	rows, err := s.SummariesBetween(ctx, 0, 1<<62)
	if err != nil || len(rows) != 3*receivedPerInsert {
		t.Fatalf("%d summaries stored (%v), want %d", len(rows), err, 3*receivedPerInsert)
	}
}
