package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// ErrIncomplete is returned by a Fetch that ended before it held every
// chunk: deadline, stall, lost connection or cancelled context. What it
// stored stays stored; a later Fetch continues.
var ErrIncomplete = errors.New("bundle fetch incomplete")

// Conn is the MQTT connection a Fetch uses. deliver is called with every
// message on topic until Unsubscribe; it must not block, and Fetch's never
// does.
type Conn interface {
	Subscribe(ctx context.Context, topic string, qos byte, deliver func(payload []byte)) error
	Unsubscribe(ctx context.Context, topic string) error
	Publish(ctx context.Context, topic string, qos byte, payload []byte) error
}

// Store is where chunks go; *chunkstore.Store is the real one.
type Store interface {
	Missing(m *pb.BundleManifest) []chunkstore.ChunkRef
	Put(ctx context.Context, ref chunkstore.ChunkRef, data []byte) error
}

var _ Store = (*chunkstore.Store)(nil)

// Defaults of Options.
const (
	DefaultQuiet           = 2 * time.Second
	DefaultMaxBackoff      = 30 * time.Second
	DefaultMaxRequestBytes = 4 << 20
	DefaultDeadline        = 30 * time.Minute
	DefaultStall           = 2 * time.Minute
	DefaultBuffer          = 64
)

// Options say which bundle to fetch for which device, and how patiently.
type Options struct {
	DeviceID string       // required: the device's own topics
	Digest   string       // required: the manifest's digest, the wave topic's ID
	Scheme   topic.Scheme // zero value: topic.Default()

	// Quiet is how long without a chunk ends listening to the wave and
	// starts repair requests; it is also the first wait for an answer.
	Quiet time.Duration
	// MaxBackoff caps the wait for an unanswered request, which doubles
	// with each unanswered attempt.
	MaxBackoff time.Duration
	// MaxRequestBytes bounds the chunks one ChunkRequest asks for.
	MaxRequestBytes int
	// Deadline bounds the whole Fetch; Stall bounds the time without a
	// newly stored chunk. Either ends it with ErrIncomplete.
	Deadline, Stall time.Duration
	// Buffer is how many received chunks may wait to be stored; more are
	// dropped (and asked for again).
	Buffer int
	// Progress, if set, is called after every stored chunk and at the end.
	Progress func(Progress)
}

func (o *Options) defaults() error {
	if err := topic.ValidID(o.DeviceID); err != nil {
		return fmt.Errorf("fetch: device: %w", err)
	}
	if err := pb.CheckDigest(o.Digest); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	if o.Scheme == (topic.Scheme{}) {
		o.Scheme = topic.Default()
	}
	o.Quiet = cmpDur(o.Quiet, DefaultQuiet)
	o.MaxBackoff = cmpDur(o.MaxBackoff, DefaultMaxBackoff)
	o.Deadline = cmpDur(o.Deadline, DefaultDeadline)
	o.Stall = cmpDur(o.Stall, DefaultStall)
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.Buffer <= 0 {
		o.Buffer = DefaultBuffer
	}
	return nil
}

func cmpDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Progress is a Fetch's state. Have and Total count each distinct chunk
// of the bundle once; Received counts every chunk payload that reached
// this Fetch, chunks it already had included.
type Progress struct {
	BytesHave, BytesTotal   int64
	ChunksHave, ChunksTotal int
	BytesReceived           int64
	Duplicates              int // received chunks already held
	Dropped                 int // received while the buffer was full
	Rejected                int // not of this bundle, or not matching the manifest
	Requests                int // ChunkRequests sent
	Elapsed                 time.Duration
	Rate                    float64 // bytes stored per second in this Fetch
	Listening               bool    // subscribed to the wave and repair topics
	Done                    bool
}

// Fetch downloads into store every chunk of m it lacks. It returns nil once
// store holds them all, or an error wrapping ErrIncomplete with what it
// has; either way every chunk it stored stays stored. m must be a manifest
// the caller has verified; opts.Digest names it.
func Fetch(ctx context.Context, conn Conn, store Store, m *pb.BundleManifest, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	f := newFetch(conn, store, m, opts)
	if len(f.want) == 0 {
		f.report(true)
		return nil
	}
	return f.run(ctx)
}

// fetch is one Fetch call's state; only run's goroutine touches it, except
// for the inbox and the dropped counter.
type fetch struct {
	conn  Conn
	store Store
	m     *pb.BundleManifest
	o     Options

	want        map[[32]byte]chunkstore.ChunkRef // still missing
	order       []chunkstore.ChunkRef            // the missing chunks, in manifest order
	p           Progress
	start       time.Time
	haveAtStart int64

	inbox   chan []byte
	dropped atomic.Int64
	asked   map[[32]byte]bool // the outstanding request's chunks
}

func newFetch(conn Conn, store Store, m *pb.BundleManifest, o Options) *fetch {
	f := &fetch{conn: conn, store: store, m: m, o: o, start: time.Now(),
		want: make(map[[32]byte]chunkstore.ChunkRef), inbox: make(chan []byte, o.Buffer)}
	seen := make(map[[32]byte]bool)
	for _, r := range chunkstore.Refs(m) {
		if !seen[r.SHA256] {
			seen[r.SHA256] = true
			f.p.ChunksTotal++
			f.p.BytesTotal += int64(r.Length)
		}
	}
	f.order = store.Missing(m)
	for _, r := range f.order {
		f.want[r.SHA256] = r
	}
	f.p.ChunksHave = f.p.ChunksTotal - len(f.want)
	f.p.BytesHave = f.p.BytesTotal
	for _, r := range f.order {
		f.p.BytesHave -= int64(r.Length)
	}
	f.haveAtStart = f.p.BytesHave
	return f
}

func (f *fetch) deliver(payload []byte) {
	select {
	case f.inbox <- payload:
	default:
		f.dropped.Add(1)
	}
}

func (f *fetch) topics() []string {
	return []string{f.o.Scheme.Bundle(topic.BundleChunks, f.o.Digest), f.o.Scheme.Device(topic.ChunkRepair, f.o.DeviceID)}
}

func (f *fetch) run(ctx context.Context) (err error) {
	ctx, cancel := context.WithTimeout(ctx, f.o.Deadline)
	defer cancel()
	var subscribed []string
	defer func() {
		// Unsubscribe, then store what already arrived: a cut costs at
		// most the chunk on the wire.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer ucancel()
		for _, t := range subscribed {
			_ = f.conn.Unsubscribe(uctx, t)
		}
		// Storing is local: its own time, not what the unsubscribes (on a
		// slow or dead link) left of uctx.
		dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer dcancel()
		if derr := f.drain(dctx); err == nil && derr != nil {
			err = derr
		}
		f.report(len(f.want) == 0)
		if err == nil && len(f.want) > 0 {
			err = f.incomplete("stopped")
		}
	}()
	for _, t := range f.topics() {
		if err := f.conn.Subscribe(ctx, t, 0, f.deliver); err != nil {
			return f.incomplete(fmt.Sprintf("subscribe %s: %v", t, err))
		}
		subscribed = append(subscribed, t)
	}
	f.p.Listening = true
	f.report(false)

	repairing := false
	attempt := 0
	lastStored := time.Now()
	timer := time.NewTimer(f.o.Quiet)
	defer timer.Stop()
	for len(f.want) > 0 {
		select {
		case payload := <-f.inbox:
			stored, err := f.handle(ctx, payload)
			if err != nil {
				return err
			}
			if !stored {
				continue
			}
			lastStored, attempt = time.Now(), 0
			if repairing && len(f.asked) == 0 && len(f.want) > 0 {
				if err := f.request(ctx); err != nil {
					return err
				}
			}
			timer.Reset(f.wait(repairing, attempt))
		case <-timer.C:
			if time.Since(lastStored) >= f.o.Stall {
				return f.incomplete(fmt.Sprintf("stalled: nothing new for %s", f.o.Stall.Round(time.Second)))
			}
			if repairing {
				attempt++
			}
			repairing = true
			if err := f.request(ctx); err != nil {
				return err
			}
			timer.Reset(f.wait(true, attempt))
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return f.incomplete(fmt.Sprintf("deadline of %s passed", f.o.Deadline))
			}
			return f.incomplete(ctx.Err().Error())
		}
	}
	return nil
}

// wait is how long to wait for the next chunk before (re)asking.
func (f *fetch) wait(repairing bool, attempt int) time.Duration {
	if !repairing {
		return f.o.Quiet
	}
	d := f.o.Quiet
	for range attempt {
		if d *= 2; d >= f.o.MaxBackoff {
			return f.o.MaxBackoff
		}
	}
	return d
}

// handle decodes and stores one received chunk, reporting whether it was
// new. Only a failure of the store itself is an error: a bad chunk is
// counted and asked for again.
func (f *fetch) handle(ctx context.Context, payload []byte) (bool, error) {
	f.p.BytesReceived += int64(len(payload))
	var c pb.Chunk
	if err := wire.DecodeTopic(topic.BundleChunks, payload, &c); err != nil || c.GetBundleDigest() != f.o.Digest {
		f.p.Rejected++
		return false, nil
	}
	files := f.m.GetFiles()
	if int(c.GetFileIndex()) >= len(files) || int(c.GetChunkIndex()) >= len(files[c.GetFileIndex()].GetChunks()) {
		f.p.Rejected++
		return false, nil
	}
	info := files[c.GetFileIndex()].GetChunks()[c.GetChunkIndex()]
	if !bytes.Equal(info.GetSha256(), c.GetSha256()) || len(info.GetSha256()) != 32 {
		f.p.Rejected++
		return false, nil
	}
	sum := [32]byte(info.GetSha256())
	if _, ok := f.want[sum]; !ok {
		f.p.Duplicates++
		return false, nil
	}
	ref := chunkstore.ChunkRef{FileIndex: c.GetFileIndex(), ChunkIndex: c.GetChunkIndex(), SHA256: sum, Length: info.GetLength()}
	if err := f.store.Put(ctx, ref, c.GetData()); err != nil {
		if errors.Is(err, chunkstore.ErrMismatch) {
			f.p.Rejected++
			return false, nil
		}
		return false, fmt.Errorf("%w: %w", ErrIncomplete, err)
	}
	delete(f.want, sum)
	delete(f.asked, sum)
	f.p.ChunksHave++
	f.p.BytesHave += int64(ref.Length)
	f.report(false)
	return true, nil
}

// drain stores the chunks already received.
func (f *fetch) drain(ctx context.Context) error {
	for {
		select {
		case payload := <-f.inbox:
			if _, err := f.handle(ctx, payload); err != nil {
				return err
			}
		default:
			return nil
		}
	}
}

func (f *fetch) report(done bool) {
	f.p.Elapsed = time.Since(f.start)
	f.p.Dropped = int(f.dropped.Load())
	f.p.Done = done
	f.p.Rate = 0
	if s := f.p.Elapsed.Seconds(); s > 0 {
		f.p.Rate = float64(f.p.BytesHave-f.haveAtStart) / s
	}
	if f.o.Progress != nil {
		f.o.Progress(f.p)
	}
}
