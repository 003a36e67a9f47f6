package metrics

import (
	"context"
	"os"
	"testing"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestOpenMemorySummarisesSendsAndAcks: the sim's in-memory buffer holds
// no file open and runs the real path: records make a window's summary,
// the outbox sends it, the ack removes it, and a second buffer is separate
// (its own epoch, nothing of the first's).
func TestOpenMemorySummarisesSendsAndAcks(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: epoch0}
	before, _ := os.ReadDir("/proc/self/fd")
	open := func() *Buffer {
		b, err := OpenMemory(ctx, Options{Now: clk.Now, Baselines: staticBaselines{"digits": testBaseline(5)}, MessagesPerSecond: 1000})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	const n = 10
	bufs := make([]*Buffer, n)
	for i := range n {
		bufs[i] = open()
	}
	if after, _ := os.ReadDir("/proc/self/fd"); len(after)-len(before) >= n {
		t.Errorf("%d in-memory buffers hold %d more open files", n, len(after)-len(before))
	}
	b, other := bufs[0], bufs[1]
	b.SetDevice("dev-1")
	for i := range 6 {
		b.Record(rec(epoch0.Add(time.Duration(i)*time.Second), 0.5, 0, true))
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	clk.Advance(61 * time.Second)
	if n, err := b.CloseWindows(ctx); err != nil || n != 1 {
		t.Fatalf("close windows: %d, %v; want 1 summary", n, err)
	}
	if n, err := other.CloseWindows(ctx); err != nil || n != 0 {
		t.Fatalf("the other buffer made %d summaries, %v", n, err)
	}
	var c collector
	if n, err := b.Drain(ctx, c.publish); err != nil || n != 1 {
		t.Fatalf("drain: %d, %v", n, err)
	}
	if s := c.msgs[0].GetSummaries().GetSummaries()[0]; s.Requests != 6 || c.msgs[0].Epoch != b.Epoch() || b.Epoch() == other.Epoch() {
		t.Fatalf("sent %v (epochs %s, %s)", c.msgs[0], b.Epoch(), other.Epoch())
	}
	if n, err := b.Ack(ctx, &pb.Ack{DeviceId: "dev-1", Epoch: b.Epoch(), Sequences: []uint64{c.msgs[0].Sequence}}); n != 1 || err != nil {
		t.Fatalf("ack removed %d, %v", n, err)
	}
	if st, _ := b.Stats(ctx); st.Pending != 0 || st.Acked != 1 || st.Summaries != 1 {
		t.Fatalf("stats %+v", st)
	}
}
