package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Store is what the ingest, queries and rollups need of the control
// plane's store.
type Store interface {
	StoreTelemetry(ctx context.Context, msgs []store.TelemetryMessage) ([]bool, error)
	ListSummaries(ctx context.Context, f store.SummaryFilter) ([]store.StoredSummary, error)
	ListRollups(ctx context.Context, g string, f store.SummaryFilter) ([]store.Rollup, error)
	RollupState(ctx context.Context, g string) (int64, []store.RollupKey, error)
	PutRollups(ctx context.Context, g string, rollups []store.Rollup, cleaned []store.RollupKey, watermark int64) error
	ClaimRollup(ctx context.Context, g string, upTo int64) error
	SummariesBetween(ctx context.Context, fromMs, toMs int64) ([]store.StoredSummary, error)
	OldestSummaryStart(ctx context.Context) (int64, bool, error)
	DeleteTelemetryBefore(ctx context.Context, r store.TelemetryRetention) (int64, error)
}

// AckSender publishes an acknowledgement on the device's ack topic.
type AckSender func(ctx context.Context, deviceID string, ack *pb.Ack) error

// Options configure an Ingest.
type Options struct {
	Scheme    topic.Scheme
	BatchSize int // messages per store transaction; 500
	// QueueSize bounds the messages waiting for a transaction, and those
	// Offer took in waiting for a decoder (split evenly among them); 4096.
	QueueSize int
	// Decoders is how many goroutines decode what Offer takes in; default
	// GOMAXPROCS. A device's messages all go to the same decoder, so they
	// reach the store in the order they came.
	Decoders int
	Now      func() time.Time
	Logger   *slog.Logger
}

// Counters are the ingest's counters, per message (Events: per event).
// Ignored counts messages stored with neither summaries nor events.
type Counters struct {
	Stored, Duplicates, Rejected, Ignored, Acked, AckErrors atomic.Uint64
	Events, Overloaded                                      atomic.Uint64
}

// Ingest takes telemetry messages in and stores them.
type Ingest struct {
	st    Store
	ack   AckSender
	opt   Options
	queue chan *Message
	// raw holds what Offer took in, one queue per decoder.
	raw []chan rawMessage
	// Counters of what happened to each message.
	Counters Counters
}

// NewIngest returns an ingest storing into st and acknowledging with ack.
func NewIngest(st Store, ack AckSender, opt Options) *Ingest {
	if opt.BatchSize <= 0 {
		opt.BatchSize = 500
	}
	if opt.QueueSize <= 0 {
		opt.QueueSize = 4096
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opt.Scheme == (topic.Scheme{}) {
		opt.Scheme = topic.Default()
	}
	if opt.Decoders <= 0 {
		opt.Decoders = runtime.GOMAXPROCS(0)
	}
	in := &Ingest{st: st, ack: ack, opt: opt, queue: make(chan *Message, opt.QueueSize)}
	in.raw = make([]chan rawMessage, opt.Decoders)
	for i := range in.raw {
		in.raw[i] = make(chan rawMessage, max(1, opt.QueueSize/opt.Decoders))
	}
	return in
}

// rawMessage is a message Offer took in, not yet decoded.
type rawMessage struct {
	topic   string
	payload []byte
}

// Subscription is the filter the control plane subscribes to, shared by
// group so that replicas split the stream.
func (in *Ingest) Subscription(group string) string {
	return topic.Shared(group, in.opt.Scheme.AllDevices(topic.Telemetry))
}

// ErrRejected wraps the reason a message was refused.
var ErrRejected = errors.New("telemetry rejected")

// Message is a decoded telemetry message, with each summary's bytes as the
// device sent them: they are stored as they are (unknown fields included),
// without encoding again. A message decoded by the fast path (the usual
// one for summaries) holds its envelope in Telemetry, without the
// summaries, and each summary's header (a WindowSummary without its
// features) beside its bytes.
type Message struct {
	Telemetry *pb.Telemetry
	raw       [][]byte
	heads     []*pb.WindowSummary
}

// NewMessage wraps a telemetry message built in process.
func NewMessage(t *pb.Telemetry) *Message { return &Message{Telemetry: t} }

// summaries are the message's summaries (headers only, from the fast path).
func (m *Message) summaries() []*pb.WindowSummary {
	if m.heads != nil {
		return m.heads
	}
	return m.Telemetry.GetSummaries().GetSummaries()
}

// empty reports whether the message carries neither summaries nor events
// (or a payload this build does not know).
func (m *Message) empty() bool {
	return m.heads == nil && m.Telemetry.GetSummaries() == nil && m.Telemetry.GetEvents() == nil
}

// Decode checks one message from topic name: the topic is a device's
// telemetry topic, the payload a valid Telemetry of that device carrying
// valid summaries or events (the checks of wire.Decode and Validate, made
// by the fast path on the wire for the summaries' features; decode.go). A
// message with neither payload (or one this build does not know) is still
// recorded and acknowledged, so that the device stops resending it.
func (in *Ingest) Decode(name string, payload []byte) (*Message, error) {
	k, id, ok := in.opt.Scheme.Parse(name)
	if !ok || k != topic.Telemetry {
		return nil, fmt.Errorf("%w: topic %q is not a telemetry topic", ErrRejected, name)
	}
	var m *Message
	if t, heads, raw, err := decodeFast(payload); err == nil {
		m = &Message{Telemetry: t, raw: raw, heads: heads}
	} else {
		t, raw, err := decodeFull(payload)
		if err != nil {
			return nil, rejected(err)
		}
		m = &Message{Telemetry: t, raw: raw}
	}
	if got := m.Telemetry.GetDeviceId(); got != id {
		return nil, fmt.Errorf("%w: device_id %q on the topic of %q", ErrRejected, got, id)
	}
	return m, nil
}

// rawSummaries slices each WindowSummary's bytes out of an encoded
// Telemetry: field 11 (Summaries), its field 1, in order. A Summaries
// field that occurs more than once is merged by protobuf, which appends
// the repeated field, and so is this.
func rawSummaries(b []byte) ([][]byte, bool) {
	const telemetrySummaries, summariesSummary = 11, 1
	var out [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if num == telemetrySummaries && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			b = b[n:]
			for len(v) > 0 {
				num, typ, n := protowire.ConsumeTag(v)
				if n < 0 {
					return nil, false
				}
				v = v[n:]
				if num == summariesSummary && typ == protowire.BytesType {
					s, n := protowire.ConsumeBytes(v)
					if n < 0 {
						return nil, false
					}
					out = append(out, s)
					v = v[n:]
					continue
				}
				n = protowire.ConsumeFieldValue(num, typ, v)
				if n < 0 {
					return nil, false
				}
				v = v[n:]
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return out, true
}

// Handle is the MQTT message callback: it decodes the message and queues
// it for the next transaction, waiting while the queue is full (the broker
// holds back further QoS 1 messages meanwhile). A refused message is
// counted and dropped, never acknowledged.
func (in *Ingest) Handle(ctx context.Context, name string, payload []byte) {
	t, ok := in.decode(name, payload)
	if !ok {
		return
	}
	select {
	case in.queue <- t:
	case <-ctx.Done():
	}
}

// Offer is Handle for a callback that must not block (a client library
// that delivers every subscription's messages on one goroutine). It only
// queues the message for one of Run's decoders, chosen by the device in
// the topic, so decoding (the larger share of the work) runs on several
// cores beside the store's transaction rather than on the callback's
// goroutine. The payload is kept until decoded (the summaries' bytes are
// stored as they are). When the decoder's queue is full the message is
// dropped, counted in Overloaded and not acknowledged, so the device sends
// it again after its ack timeout.
func (in *Ingest) Offer(name string, payload []byte) {
	k, id, ok := in.opt.Scheme.Parse(name)
	if !ok || k != topic.Telemetry {
		in.decode(name, payload) // refused, and counted, there
		return
	}
	select {
	case in.raw[shard(id, len(in.raw))] <- rawMessage{name, payload}:
	default:
		if in.Counters.Overloaded.Add(1)&1023 == 1 {
			in.opt.Logger.Warn("telemetry queue full; messages dropped unacknowledged (devices resend them)",
				"dropped", in.Counters.Overloaded.Load())
		}
	}
}

// shard picks a device's decoder (FNV-1a of its id).
func shard(id string, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(id); i++ {
		h = (h ^ uint32(id[i])) * 16777619
	}
	return int(h % uint32(n))
}

// decodeLoop decodes what Offer queued on q and queues it for the store,
// until ctx ends.
func (in *Ingest) decodeLoop(ctx context.Context, q <-chan rawMessage) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-q:
			if m, ok := in.decode(r.topic, r.payload); ok {
				select {
				case in.queue <- m:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

func (in *Ingest) decode(name string, payload []byte) (*Message, bool) {
	t, err := in.Decode(name, payload)
	if err != nil {
		in.Counters.Rejected.Add(1)
		in.opt.Logger.Warn("telemetry dropped", "topic", name, "err", err)
		return nil, false
	}
	return t, true
}

// Run decodes what Offer queued, stores queued messages in batches (many
// messages per transaction) and acknowledges them once committed, until
// ctx ends.
func (in *Ingest) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, q := range in.raw {
		wg.Go(func() { in.decodeLoop(ctx, q) })
	}
	batch := make([]*Message, 0, in.opt.BatchSize)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case t := <-in.queue:
			batch = append(batch[:0], t)
		}
	more:
		for len(batch) < in.opt.BatchSize {
			select {
			case t := <-in.queue:
				batch = append(batch, t)
			default:
				break more
			}
		}
		for {
			err := in.Store(ctx, batch)
			if err == nil || ctx.Err() != nil {
				break
			}
			// Not committed: nothing is acknowledged, and the device would
			// resend; retrying here keeps the order.
			in.opt.Logger.Error("telemetry store failed; retrying", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
}

// Store stores msgs (already decoded) in one transaction, then
// acknowledges each device's messages, duplicates included (the device
// missed the earlier ack).
func (in *Ingest) Store(ctx context.Context, msgs []*Message) error {
	now := in.opt.Now().UnixMilli()
	rows := make([]store.TelemetryMessage, len(msgs))
	for i, msg := range msgs {
		t := msg.Telemetry
		m := store.TelemetryMessage{DeviceID: t.GetDeviceId(), Epoch: t.GetEpoch(), Sequence: t.GetSequence(), ReceivedAt: now}
		for _, e := range t.GetEvents().GetEvents() {
			m.Events = append(m.Events, store.Event{AtMs: e.GetAtMs(), Level: e.GetLevel(), Code: e.GetCode(),
				Message: e.GetMessage(), Attrs: e.GetAttrs()})
		}
		for j, s := range msg.summaries() {
			var payload []byte
			if msg.raw != nil {
				payload = msg.raw[j]
			} else if b, err := wire.Encode(s); err == nil {
				payload = b
			} else {
				return err
			}
			m.Summaries = append(m.Summaries, store.StoredSummary{Index: j, Model: s.GetModel(), Release: s.GetRelease(),
				Slot: s.GetSlot(), StartMs: s.GetStartMs(), EndMs: s.GetEndMs(), Requests: s.GetRequests(),
				Errors: s.GetErrors(), Payload: payload})
		}
		rows[i] = m
	}
	dup, err := in.st.StoreTelemetry(ctx, rows)
	if err != nil {
		return err
	}
	type key struct{ device, epoch string }
	acks := map[key]*pb.Ack{}
	var order []key
	for i, msg := range msgs {
		t := msg.Telemetry
		switch {
		case dup[i]:
			in.Counters.Duplicates.Add(1)
		case msg.empty():
			in.Counters.Ignored.Add(1)
		default:
			in.Counters.Stored.Add(1)
			in.Counters.Events.Add(uint64(len(t.GetEvents().GetEvents())))
		}
		k := key{t.GetDeviceId(), t.GetEpoch()}
		a, ok := acks[k]
		if !ok {
			a = &pb.Ack{DeviceId: k.device, Epoch: k.epoch}
			acks[k] = a
			order = append(order, k)
		}
		a.Sequences = append(a.Sequences, t.GetSequence())
	}
	if in.ack == nil {
		return nil
	}
	for _, k := range order {
		if err := in.ack(ctx, k.device, acks[k]); err != nil {
			// Stored but not acknowledged: the device resends, and the resend
			// is acknowledged as a duplicate.
			in.Counters.AckErrors.Add(1)
			continue
		}
		in.Counters.Acked.Add(uint64(len(acks[k].Sequences)))
	}
	return nil
}
