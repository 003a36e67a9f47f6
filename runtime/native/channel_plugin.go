package native

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"unsafe"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// serveChannels serves the Infer channels the host passes over the
// bootstrap socket f (plugin side), until the host closes it.
func serveChannels(boot *os.File, s *Server) {
	defer boot.Close()
	hdr := make([]byte, 1)
	for {
		fds, err := readHeader(boot, hdr)
		if err != nil {
			return
		}
		for _, fd := range fds {
			go serveChannel(os.NewFile(uintptr(fd), "channel"), s)
		}
	}
}

// serveChannel answers one channel's calls, one at a time. Anything
// malformed closes the channel: the host sees it broken.
func serveChannel(c *os.File, s *Server) {
	var buf []byte
	defer func() {
		c.Close()
		unmapBuffer(buf)
	}()
	hdr := make([]byte, frameHeader)
	for {
		fds, err := readHeader(c, hdr)
		if err != nil {
			return
		}
		kind, payload, err := readPayload(c, hdr)
		if err != nil {
			closeFds(fds)
			return
		}
		switch kind {
		case kindBuffer:
			if len(fds) != 1 || len(payload) != 8 {
				closeFds(fds)
				return
			}
			size := binary.LittleEndian.Uint64(payload)
			if size > maxBufferBytes {
				closeFds(fds)
				return
			}
			mem, err := mapBuffer(fds[0], int(size))
			closeFds(fds)
			if err != nil {
				return
			}
			unmapBuffer(buf)
			buf = mem
		case kindInfer:
			closeFds(fds)
			if _, err := c.Write(s.inferFrame(payload, buf)); err != nil {
				return
			}
		default:
			closeFds(fds)
			return
		}
	}
}

// inferFrame runs the call in payload and returns the reply frame.
func (s *Server) inferFrame(payload, buf []byte) []byte {
	var req flotillapb.InferRequest
	if err := proto.Unmarshal(payload, &req); err != nil {
		return errorFrame(fmt.Errorf("%w: %w", runtime.ErrInvalidInput, err))
	}
	in, err := fromBuffer(req.GetInputs(), buf, false)
	if err != nil {
		return errorFrame(fmt.Errorf("%w: %w", runtime.ErrInvalidInput, err))
	}
	out, err := s.infer(context.Background(), req.GetModelId(), in)
	if err != nil {
		return errorFrame(err)
	}
	// An output may share memory with an input (a model that passes an
	// input through): copy those before the buffer is overwritten.
	for i := range out {
		if overlaps(out[i].Data, buf) {
			out[i].Data = append([]byte{}, out[i].Data...)
		}
	}
	if ps, ok := toBuffer(out, buf); ok {
		frame, err := marshalFrame(kindResult, &flotillapb.InferResponse{Outputs: ps})
		if err != nil {
			return errorFrame(err)
		}
		return frame
	}
	frame, err := marshalFrame(kindInline, &flotillapb.InferResponse{Outputs: tensorsToProto(out)})
	if err != nil {
		return errorFrame(err)
	}
	return frame
}

// overlaps reports whether a and b share memory.
func overlaps(a, b []byte) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0, b0 := uintptr(unsafe.Pointer(unsafe.SliceData(a))), uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return a0 < b0+uintptr(len(b)) && b0 < a0+uintptr(len(a))
}
