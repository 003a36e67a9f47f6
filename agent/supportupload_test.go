package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TestSupportPacer: with a budget, an hour's worth goes at once and the
// rest waits for the budget's rate; without one nothing waits. Simulated
// time.
func TestSupportPacer(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	p := newPacer(86400*100, t0) // 100 B/s, burst 360 000 B
	if w := p.take(360_000, t0); w != 0 {
		t.Fatalf("the burst waited %v", w)
	}
	if w := p.take(1000, t0); w != 10*time.Second {
		t.Fatalf("1000 B over the burst waits %v, want 10s", w)
	}
	// Ten seconds later the debt is paid: the next 500 B wait 5 s.
	if w := p.take(500, t0.Add(10*time.Second)); w != 5*time.Second {
		t.Fatalf("waited %v, want 5s", w)
	}
	p.refund(500)
	if w := p.take(0, t0.Add(10*time.Second)); w != 0 {
		t.Fatalf("after a refund: %v", w)
	}
	if w := newPacer(0, t0).take(1<<30, t0); w != 0 {
		t.Fatalf("no budget, waited %v", w)
	}
}

// TestSupportUploadResumesAfterReconnect: asked for a support bundle, the
// agent answers with its size and digest and sends the chunks one by one
// as acks ask; when the connection drops with a chunk unacknowledged, it
// sends that chunk again on the new connection, finishes with the
// signature on the last chunk, and its uploader ends once the ack says
// done.
// Real broker, fake clock.
func TestSupportUploadResumesAfterReconnect(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-up")
	d := newCutDialer()
	cfg.Dialer = d
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg.Clock = clock
	bundle := make([]byte, 2*defaultSupportChunk+1000)
	_, _ = rand.Read(bundle)
	r := start(t, cfg)
	r.SetSupportBundler(func(_ context.Context, max int64) ([]byte, []byte, error) {
		if max != 1<<20 {
			return nil, nil, fmt.Errorf("max %d", max)
		}
		return bundle, []byte(`{"sig":1}`), nil
	})
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-up", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))

	mark := srv.Mark()
	srv.PublishCommand(&flotillapb.Command{Id: "c1", DeviceId: "dev-up", Kind: &flotillapb.Command_SupportBundle{
		SupportBundle: &flotillapb.SupportBundle{UploadId: "up-1", MaxSize: 1 << 20}}})
	res := agenttest.WaitFor[flotillapb.CommandResult](srv, mark, "dev-up", topic.CommandResult, nil)
	var ans SupportAnswer
	if err := json.Unmarshal(res.GetOutput(), &ans); err != nil || !res.GetOk() || ans.Chunks != 3 || ans.Size != len(bundle) {
		t.Fatalf("answer: %v %s", res, res.GetOutput())
	}
	chunk := func(mark int, i uint32) *flotillapb.SupportChunk {
		t.Helper()
		return agenttest.WaitFor[flotillapb.SupportChunk](srv, mark, "dev-up", topic.SupportUpload, func(c *flotillapb.SupportChunk) bool { return c.GetIndex() == i })
	}
	ack := func(next uint32, done bool) {
		b, err := wire.Encode(&flotillapb.SupportAck{UploadId: "up-1", DeviceId: "dev-up", Next: next, Done: done})
		if err != nil {
			t.Fatal(err)
		}
		srv.Publish(srv.Scheme().Device(topic.SupportAck, "dev-up"), b, false)
	}
	got := chunk(mark, 0).GetData()
	mark = srv.Mark()
	ack(1, false)
	c1 := chunk(mark, 1)
	got = append(got, c1.GetData()...)
	// The connection drops before chunk 1 is acknowledged.
	d.cut()
	eventually(t, "agent notices", func() bool { return r.Status().State == StateConnecting })
	mark = srv.Mark()
	eventually(t, "backoff timer", func() bool { return clock.Waiters() > 0 })
	clock.Advance(backoffBase)
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-up", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	eventually(t, "connection served", func() bool { return r.Internals().Connected })
	// Chunk 1 is sent again once its ack is overdue, on the new connection.
	clock.Advance(supportAckTimeout)
	if again := chunk(mark, 1); string(again.GetData()) != string(c1.GetData()) {
		t.Fatal("chunk 1 resent with other data")
	}
	mark = srv.Mark()
	ack(2, false)
	last := chunk(mark, 2)
	got = append(got, last.GetData()...)
	if string(got) != string(bundle) || string(last.GetSignature()) != `{"sig":1}` {
		t.Fatalf("the chunks do not make the bundle, or the signature is missing (%d bytes)", len(got))
	}
	ack(3, true)
	eventually(t, "uploader returned", func() bool {
		r.dg.mu.Lock()
		defer r.dg.mu.Unlock()
		return r.dg.upload == nil
	})
	// The uploader has returned: nothing is left to send anything.
}
