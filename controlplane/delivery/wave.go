package delivery

import (
	"context"
	"fmt"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Defaults of WaveOptions.
const (
	// DefaultWaveRate suits a LAN: the broker sends it to every fetching
	// device at once, so its egress is the rate times the wave's size.
	DefaultWaveRate  = 8 << 20
	DefaultBurst     = 1 << 20
	DefaultReadAhead = 4
)

// WaveOptions pace a wave.
type WaveOptions struct {
	Scheme topic.Scheme // zero value: topic.Default()
	// Rate is the wave's pace in bytes per second of MQTT payload, Burst
	// how many bytes may go at once after a pause. 0 means the default; a
	// negative Rate means unpaced (benchmarks only: brokers drop what
	// their per-client queues cannot hold).
	Rate, Burst int64
	// ReadAhead is how many chunks are read from the store, checked and
	// encoded while earlier ones are being published.
	ReadAhead int
	// Except, if set, is a release the wave's devices already hold: its
	// chunks are left out (a delta wave). A device without them gets
	// them by repair.
	Except *pb.BundleManifest
}

// WaveStats says what one pass of a wave sent.
type WaveStats struct {
	Chunks  int
	Bytes   int64 // MQTT payload bytes published (chunk data plus envelope)
	Elapsed time.Duration
}

// Wave publishes a bundle's chunks on its wave topic.
type Wave struct {
	src    Source
	pub    Publisher
	digest string
	topic  string
	refs   []chunkRef
	o      WaveOptions
}

type chunkRef struct {
	file, chunk uint32
	sum         [32]byte
}

// NewWave prepares a wave of the bundle digest from src.
func NewWave(src Source, pub Publisher, digest string, o WaveOptions) (*Wave, error) {
	_, m, err := src.Manifest(digest)
	if err != nil {
		return nil, fmt.Errorf("wave: %w", err)
	}
	if o.Scheme == (topic.Scheme{}) {
		o.Scheme = topic.Default()
	}
	if o.Rate == 0 {
		o.Rate = DefaultWaveRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultBurst
	}
	if o.ReadAhead <= 0 {
		o.ReadAhead = DefaultReadAhead
	}
	return &Wave{src: src, pub: pub, digest: digest, topic: o.Scheme.Bundle(topic.BundleChunks, digest),
		refs: uniqueChunks(m, o.Except), o: o}, nil
}

// uniqueChunks lists m's chunks in file and chunk order, each hash once,
// leaving out except's.
func uniqueChunks(m, except *pb.BundleManifest) []chunkRef {
	seen := make(map[[32]byte]bool)
	for _, f := range except.GetFiles() {
		for _, c := range f.GetChunks() {
			if len(c.GetSha256()) == 32 {
				seen[[32]byte(c.GetSha256())] = true
			}
		}
	}
	var out []chunkRef
	for i, f := range m.GetFiles() {
		for j, c := range f.GetChunks() {
			if len(c.GetSha256()) != 32 || seen[[32]byte(c.GetSha256())] {
				continue
			}
			seen[[32]byte(c.GetSha256())] = true
			out = append(out, chunkRef{file: uint32(i), chunk: uint32(j), sum: [32]byte(c.GetSha256())})
		}
	}
	return out
}

// Chunks is how many chunks one pass publishes.
func (w *Wave) Chunks() int { return len(w.refs) }

// Run publishes every distinct chunk once, in file and chunk order, paced.
// Run again for a second pass (stragglers that joined late); each pass is
// independent.
func (w *Wave) Run(ctx context.Context) (WaveStats, error) {
	start := time.Now()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type item struct {
		payload []byte
		err     error
	}
	ready := make(chan item, w.o.ReadAhead)
	go func() {
		defer close(ready)
		for _, r := range w.refs {
			payload, err := encodeChunk(w.src, w.digest, r)
			select {
			case ready <- item{payload, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	p := newPacer(w.o.Rate, w.o.Burst)
	var st WaveStats
	for it := range ready {
		if it.err != nil {
			return st, fmt.Errorf("wave %s: %w", w.digest[:12], it.err)
		}
		if err := p.take(ctx, len(it.payload)); err != nil {
			return st, fmt.Errorf("wave %s: %w", w.digest[:12], err)
		}
		if err := w.pub.Publish(ctx, w.topic, 0, false, it.payload); err != nil {
			return st, fmt.Errorf("wave %s: publish chunk %d: %w", w.digest[:12], st.Chunks, err)
		}
		st.Chunks++
		st.Bytes += int64(len(it.payload))
		st.Elapsed = time.Since(start)
	}
	if err := ctx.Err(); err != nil {
		return st, fmt.Errorf("wave %s: %w", w.digest[:12], err)
	}
	return st, nil
}

// encodeChunk reads one chunk (the store checks its hash) and encodes it.
func encodeChunk(src Source, digest string, r chunkRef) ([]byte, error) {
	data, err := src.Chunk(r.sum)
	if err != nil {
		return nil, err
	}
	return wire.Encode(&pb.Chunk{BundleDigest: digest, FileIndex: r.file, ChunkIndex: r.chunk, Sha256: r.sum[:], Data: data})
}
