package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func eventsOf(device string, seq uint64, es ...*pb.Event) *pb.Telemetry {
	return &pb.Telemetry{DeviceId: device, Epoch: "e", Sequence: seq, Payload: &pb.Telemetry_Events{Events: &pb.Events{Events: es}}}
}

func event(code, level string) *pb.Event {
	return &pb.Event{AtMs: t0.UnixMilli(), Level: level, Code: code, Message: "it happened", Attrs: map[string]string{"model": "digits"}}
}

// recordedAcks collects the acks an ingest sends.
type recordedAcks struct {
	mu   sync.Mutex
	seqs map[string][]uint64
}

func (r *recordedAcks) send(_ context.Context, device string, a *pb.Ack) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seqs == nil {
		r.seqs = map[string][]uint64{}
	}
	r.seqs[device] = append(r.seqs[device], a.GetSequences()...)
	return nil
}

// TestEventsStoredAndAcked: an Events payload is stored (once, however
// often it comes) and acknowledged like summaries; a message with no
// payload is acknowledged so the device stops resending it.
func TestEventsStoredAndAcked(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	var acks recordedAcks
	in := telemetry.NewIngest(st, acks.send, telemetry.Options{})
	topic := scheme.Device("telemetry", "dev-1")
	var msgs []*telemetry.Message
	for _, tm := range []*pb.Telemetry{
		eventsOf("dev-1", 1, event("model.rollback", "error"), event("agent.restart", "info")),
		eventsOf("dev-1", 1, event("model.rollback", "error"), event("agent.restart", "info")), // resent
		{DeviceId: "dev-1", Epoch: "e", Sequence: 2},                                           // no payload
		telemetryOf("dev-1", 3, windowSummary(0, 1, t0)),
	} {
		b, _ := wire.Encode(tm)
		m, err := in.Decode(topic, b)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	if err := in.Store(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{DeviceID: "dev-1"})
	if err != nil || len(evs) != 2 {
		t.Fatalf("events %+v, %v", evs, err)
	}
	if evs[0].Code != "agent.restart" || evs[1].Code != "model.rollback" || evs[1].Level != "error" ||
		evs[1].Attrs["model"] != "digits" || evs[1].Message != "it happened" || evs[1].AtMs != t0.UnixMilli() {
		t.Fatalf("events: %+v", evs)
	}
	if got := acks.seqs["dev-1"]; len(got) != 4 || got[0] != 1 || got[1] != 1 || got[2] != 2 || got[3] != 3 {
		t.Fatalf("acks %v, want [1 1 2 3]", got)
	}
	c := &in.Counters
	if c.Stored.Load() != 2 || c.Duplicates.Load() != 1 || c.Ignored.Load() != 1 || c.Events.Load() != 2 || c.Acked.Load() != 4 {
		t.Fatalf("counters: stored %d dup %d ignored %d events %d acked %d", c.Stored.Load(), c.Duplicates.Load(),
			c.Ignored.Load(), c.Events.Load(), c.Acked.Load())
	}
}

// TestEventsHostile: events breaking the limits are refused whole, never
// stored nor acknowledged.
func TestEventsHostile(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	var acks recordedAcks
	in := telemetry.NewIngest(st, acks.send, telemetry.Options{})
	many := map[string]string{}
	for i := range telemetry.MaxEventAttrs + 1 {
		many[strings.Repeat("k", i+1)] = "v"
	}
	for name, e := range map[string]*pb.Event{
		"bad level":    event("x", "fatal"),
		"no code":      event("", "info"),
		"long code":    event(strings.Repeat("c", telemetry.MaxEventCode+1), "info"),
		"no time":      {Level: "info", Code: "x"},
		"long message": {AtMs: 1, Level: "info", Code: "x", Message: strings.Repeat("m", telemetry.MaxEventMessage+1)},
		"many attrs":   {AtMs: 1, Level: "info", Code: "x", Attrs: many},
		"long attr":    {AtMs: 1, Level: "info", Code: "x", Attrs: map[string]string{"k": strings.Repeat("v", telemetry.MaxEventAttr+1)}},
		"empty key":    {AtMs: 1, Level: "info", Code: "x", Attrs: map[string]string{"": "v"}},
	} {
		b, _ := wire.Encode(eventsOf("dev-1", 1, event("ok", "info"), e))
		if _, err := in.Decode(scheme.Device("telemetry", "dev-1"), b); !errors.Is(err, telemetry.ErrRejected) {
			t.Errorf("%s: %v, want ErrRejected", name, err)
		}
	}
	tooMany := eventsOf("dev-1", 1)
	for range 1001 {
		tooMany.GetEvents().Events = append(tooMany.GetEvents().Events, proto.Clone(event("x", "info")).(*pb.Event))
	}
	b, _ := wire.Encode(tooMany)
	in.Handle(ctx, scheme.Device("telemetry", "dev-1"), b)
	if in.Counters.Rejected.Load() != 1 {
		t.Fatalf("1001 events: rejected %d", in.Counters.Rejected.Load())
	}
	if evs, _ := st.ListEvents(ctx, store.EventFilter{DeviceID: "dev-1"}); len(evs) != 0 || len(acks.seqs) != 0 {
		t.Fatalf("hostile events stored %d, acked %v", len(evs), acks.seqs)
	}
}

// TestOfferSheds: Offer never blocks; past the queue's capacity messages
// are dropped unacknowledged and counted, and what was queued is stored.
func TestOfferSheds(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	var acks recordedAcks
	in := telemetry.NewIngest(st, acks.send, telemetry.Options{QueueSize: 2, Decoders: 1})
	for seq := uint64(1); seq <= 5; seq++ {
		b, _ := wire.Encode(telemetryOf("dev-1", seq, windowSummary(0, 1, t0)))
		in.Offer(scheme.Device("telemetry", "dev-1"), b) // nothing drains the queue yet
	}
	if got := in.Counters.Overloaded.Load(); got != 3 {
		t.Fatalf("overloaded %d, want 3", got)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	waitFor(t, func() bool { return in.Counters.Acked.Load() == 2 })
	cancel()
	<-done
	if got := acks.seqs["dev-1"]; len(got) != 2 || got[0] != 1 || got[1] != 2 {
		t.Fatalf("acked %v, want [1 2]", got)
	}
}

// TestOfferDecodersKeepOrder: what Offer takes in is decoded by several
// decoders, yet each device's messages are stored and acknowledged in the
// order they came, each once; a message that is not telemetry is refused
// and counted without reaching the store.
func TestOfferDecodersKeepOrder(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	st := openStore(t)
	var acks recordedAcks
	in := telemetry.NewIngest(st, acks.send, telemetry.Options{Decoders: 4, BatchSize: 7})
	done := make(chan error)
	go func() { done <- in.Run(ctx) }()
	const devices, perDevice = 8, 40
	for seq := uint64(1); seq <= perDevice; seq++ {
		for d := range devices {
			dev := fmt.Sprint("dev-", d)
			b, _ := wire.Encode(telemetryOf(dev, seq, windowSummary(int(seq), 1, t0.Add(time.Duration(seq)*time.Minute))))
			in.Offer(scheme.Device("telemetry", dev), b)
		}
	}
	b, _ := wire.Encode(telemetryOf("dev-0", 99, windowSummary(0, 1, t0)))
	in.Offer(scheme.Device("ack", "dev-0"), b)
	in.Offer(scheme.Device("telemetry", "dev-1"), b) // dev-0's message on dev-1's topic
	waitFor(t, func() bool { return in.Counters.Acked.Load() == devices*perDevice })
	cancel()
	<-done
	if in.Counters.Rejected.Load() != 2 || in.Counters.Overloaded.Load() != 0 || in.Counters.Stored.Load() != devices*perDevice {
		t.Fatalf("rejected %d overloaded %d stored %d", in.Counters.Rejected.Load(), in.Counters.Overloaded.Load(), in.Counters.Stored.Load())
	}
	for d := range devices {
		dev := fmt.Sprint("dev-", d)
		got := acks.seqs[dev]
		if len(got) != perDevice {
			t.Fatalf("%s: %d acks, want %d", dev, len(got), perDevice)
		}
		for i, seq := range got {
			if seq != uint64(i+1) {
				t.Fatalf("%s: acks out of order: %v", dev, got)
			}
		}
		rows, err := st.ListSummaries(context.Background(), store.SummaryFilter{Model: "digits", DeviceID: dev, ToMs: 1 << 62})
		if err != nil || len(rows) != perDevice {
			t.Fatalf("%s: %d summaries stored (%v), want %d", dev, len(rows), err, perDevice)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met in time")
}
