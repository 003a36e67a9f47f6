package metrics

import (
	"context"
	"runtime"
	"testing"
	"unsafe"
)

// TestQueueGrowsAndShrinks: the queue holds no memory until records come,
// takes chunks as it fills, refuses records (not Sync markers) at its
// bound, hands everything over in order, and keeps only a few chunks
// spare afterwards.
func TestQueueGrowsAndShrinks(t *testing.T) {
	const limit = 3*chunkLen + 10
	q := newQueue(limit)
	if len(q.chunks)+len(q.spare) != 0 {
		t.Fatal("chunks allocated before any record")
	}
	for i := range limit {
		if !q.push(entry{rec: Record{Release: uint64(i)}}) {
			t.Fatalf("record %d refused under the bound", i)
		}
	}
	if len(q.chunks) != 4 {
		t.Fatalf("%d chunks for %d records", len(q.chunks), limit)
	}
	if q.push(entry{rec: Record{}}) {
		t.Fatal("a record over the bound was queued")
	}
	done := make(chan struct{})
	if !q.push(entry{sync: done}) {
		t.Fatal("a Sync marker was refused by a full queue")
	}
	select {
	case <-q.wake:
	default:
		t.Fatal("the writer was not woken")
	}
	taken := q.take(nil)
	var got []entry
	for _, c := range taken {
		got = append(got, c.e[:c.n]...)
	}
	if len(got) != limit+1 || got[limit].sync != done {
		t.Fatalf("took %d entries", len(got))
	}
	for i := range limit {
		if got[i].rec.Release != uint64(i) {
			t.Fatalf("entry %d is record %d: out of order", i, got[i].rec.Release)
		}
	}
	q.recycle(taken)
	if len(q.chunks) != 0 || len(q.spare) != min(spareChunks, 4) || q.full.Load() {
		t.Fatalf("after take: %d chunks, %d spare, full %v", len(q.chunks), len(q.spare), q.full.Load())
	}
	for _, c := range q.spare {
		if c.n != 0 || c.e[1].rec.Release != 0 {
			t.Fatal("a spare chunk still holds records")
		}
	}
	if !q.push(entry{rec: Record{}}) {
		t.Fatal("refused after the writer took everything")
	}
	q.close()
	if q.push(entry{rec: Record{}}) || q.push(entry{sync: make(chan struct{})}) {
		t.Fatal("queued after close")
	}
}

// TestOpenAllocatesNoQueue: opening the buffer with the default bound
// (65,536 records) allocates a small fraction of what a queue of that
// bound would take (11 MB), so that an idle agent does not carry it.
func TestOpenAllocatesNoQueue(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	b, err := Open(context.Background(), t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	runtime.ReadMemStats(&after)
	full := uint64(1<<16) * uint64(unsafe.Sizeof(entry{}))
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("Open allocated %d bytes (a full queue: %d)", got, full)
	if got > full/8 {
		t.Fatalf("Open allocated %d bytes, a full queue is %d", got, full)
	}
}
