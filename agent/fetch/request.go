package fetch

import (
	"context"
	"fmt"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// request asks for the next missing chunks, at most MaxRequestBytes of
// them (always at least one), in manifest order.
func (f *fetch) request(ctx context.Context) error {
	var batch []chunkstore.ChunkRef
	size := 0
	for _, r := range f.order {
		if _, ok := f.want[r.SHA256]; !ok {
			continue
		}
		if len(batch) > 0 && size+int(r.Length) > f.o.MaxRequestBytes {
			break
		}
		batch = append(batch, r)
		size += int(r.Length)
	}
	if len(batch) == 0 {
		return nil
	}
	req := &pb.ChunkRequest{DeviceId: f.o.DeviceID, BundleDigest: f.o.Digest, Ranges: Ranges(batch)}
	payload, err := wire.Encode(req)
	if err != nil {
		return fmt.Errorf("%w: encode request: %w", ErrIncomplete, err)
	}
	if err := f.conn.Publish(ctx, f.o.Scheme.Device(topic.ChunkRequest, f.o.DeviceID), 1, payload); err != nil {
		return f.incomplete(fmt.Sprintf("send chunk request: %v", err))
	}
	f.p.Requests++
	f.asked = make(map[[32]byte]bool, len(batch))
	for _, r := range batch {
		f.asked[r.SHA256] = true
	}
	return nil
}

// Ranges packs refs, in manifest order, into ranges of consecutive chunks
// of one file.
func Ranges(refs []chunkstore.ChunkRef) []*pb.ChunkRange {
	var out []*pb.ChunkRange
	for _, r := range refs {
		if n := len(out); n > 0 {
			last := out[n-1]
			if last.GetFileIndex() == r.FileIndex && last.GetFirst()+last.GetCount() == r.ChunkIndex {
				last.Count++
				continue
			}
		}
		out = append(out, &pb.ChunkRange{FileIndex: r.FileIndex, First: r.ChunkIndex, Count: 1})
	}
	return out
}

// incomplete is ErrIncomplete with why and what is held so far.
func (f *fetch) incomplete(why string) error {
	return fmt.Errorf("%w: %s: have %d of %d chunks (%d of %d bytes); a later fetch resumes",
		ErrIncomplete, why, f.p.ChunksHave, f.p.ChunksTotal, f.p.BytesHave, f.p.BytesTotal)
}
