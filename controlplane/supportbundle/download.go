package supportbundle

import (
	"context"
	"fmt"
	"io"
)

// Open opens a ready bundle for reading (streamed from the store a chunk
// at a time) and returns its signature file's bytes.
func (s *Service) Open(deviceID, id string) (io.ReadCloser, Info, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	u, err := s.get(ctx, deviceID, id)
	in := infoOf(u)
	if err != nil {
		return nil, in, nil, err
	}
	if u.State != StateReady {
		return nil, in, nil, fmt.Errorf("%w: %s", ErrNotReady, u.State)
	}
	return &reader{s: s, dev: deviceID, id: id, chunks: u.Chunks, left: u.Size}, in, u.Signature, nil
}

// reader reads a ready bundle's chunks in order. A bundle pruned while it
// is read ends in an error, not a short file.
type reader struct {
	s       *Service
	dev, id string
	next    uint32 // the chunk to read after buf
	chunks  uint32
	left    int64 // bytes of the bundle not yet returned
	buf     []byte
	closed  bool
}

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, fmt.Errorf("support bundle %s/%s: read after close", r.dev, r.id)
	}
	for len(r.buf) == 0 {
		if r.next == r.chunks {
			if r.left != 0 {
				return 0, fmt.Errorf("support bundle %s/%s: %d bytes short", r.dev, r.id, r.left)
			}
			return 0, io.EOF
		}
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		b, err := r.s.st.SupportChunk(ctx, r.dev, r.id, r.next)
		cancel()
		if err != nil {
			return 0, fmt.Errorf("support bundle %s/%s: %w", r.dev, r.id, err)
		}
		if int64(len(b)) > r.left {
			return 0, fmt.Errorf("support bundle %s/%s: chunk %d runs past the bundle's size", r.dev, r.id, r.next)
		}
		r.buf, r.next = b, r.next+1
	}
	n := copy(p, r.buf)
	r.buf, r.left = r.buf[n:], r.left-int64(n)
	return n, nil
}

func (r *reader) Close() error {
	r.closed, r.buf = true, nil
	return nil
}
