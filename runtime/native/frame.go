package native

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Infer channels (protocol 2) are the fast path for Infer beside gRPC.
//
// At start the host hands the plugin one end of a unix socket pair as file
// descriptor 3 and says so in the environment (ChannelsEnv): the bootstrap
// socket. For each channel the host makes another socket pair and passes
// one end over the bootstrap socket (SCM_RIGHTS): nothing on the file
// system, nothing another process can connect to. A channel carries one
// call at a time; the host pools them, one per concurrent call.
//
// Each channel has a buffer of shared memory (a sealed memfd the host
// creates and passes over the channel, again whenever it grows). Numeric
// tensor data lives there; the socket carries only names, types, shapes and
// strings, so a call costs one socket round trip and one copy each way on
// the host side, none on the plugin side for inputs. Frames:
//
//	frame = length u32 LE | kind u8 | payload (length bytes)
//
//	kindBuffer  host → plugin  payload: size u64 LE; the memfd rides along
//	kindInfer   host → plugin  payload: InferRequest; numeric inputs' bytes
//	                           in the buffer, in order, each at the next
//	                           64-byte boundary; their data fields empty
//	kindResult  plugin → host  payload: InferResponse, outputs laid out so
//	kindInline  plugin → host  payload: InferResponse with data inline (the
//	                           outputs did not fit the buffer)
//	kindError   plugin → host  payload: gRPC code u32 LE | message
const (
	kindBuffer byte = 1 + iota
	kindInfer
	kindResult
	kindInline
	kindError
)

// ChannelsEnv tells a plugin which descriptor is its bootstrap socket.
const ChannelsEnv = "FLOTILLA_RUNTIME_CHANNELS"

const (
	frameHeader = 5
	// bufferAlign aligns each tensor in the shared buffer (cache lines,
	// and any SIMD load ONNX Runtime does on its inputs).
	bufferAlign = 64
	// maxBufferBytes bounds a channel's shared buffer, as MaxMessageBytes
	// bounds a gRPC message.
	maxBufferBytes = MaxMessageBytes
	minBufferBytes = 256 << 10
)

var errFrame = errors.New("malformed channel frame")

// appendFrame appends a frame of kind holding payload to dst.
func appendFrame(dst []byte, kind byte, payload []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(payload)))
	dst = append(dst, kind)
	return append(dst, payload...)
}

// marshalFrame encodes m as a frame in one buffer, ready for one write.
func marshalFrame(kind byte, m proto.Message) ([]byte, error) {
	buf := make([]byte, frameHeader, frameHeader+proto.Size(m))
	buf, err := proto.MarshalOptions{}.MarshalAppend(buf, m)
	if err != nil {
		return nil, err
	}
	if len(buf)-frameHeader > MaxMessageBytes {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds %d", runtime.ErrInvalidInput, len(buf)-frameHeader, MaxMessageBytes)
	}
	binary.LittleEndian.PutUint32(buf, uint32(len(buf)-frameHeader))
	buf[4] = kind
	return buf, nil
}

// readFrame reads the rest of a frame whose header is hdr.
func readPayload(r io.Reader, hdr []byte) (byte, []byte, error) {
	n := binary.LittleEndian.Uint32(hdr)
	if n > MaxMessageBytes {
		return 0, nil, fmt.Errorf("%w: %d-byte payload", errFrame, n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

func errorFrame(err error) []byte {
	st := status.Convert(toStatus(err))
	payload := binary.LittleEndian.AppendUint32(nil, uint32(st.Code()))
	return appendFrame(nil, kindError, append(payload, st.Message()...))
}

func parseError(payload []byte) error {
	if len(payload) < 4 {
		return fmt.Errorf("%w: short error", errFrame)
	}
	return fromStatus(status.Error(codes.Code(binary.LittleEndian.Uint32(payload)), string(payload[4:])))
}

// alignUp rounds n up to the buffer alignment.
func alignUp(n int) int { return (n + bufferAlign - 1) &^ (bufferAlign - 1) }

// numericBytes is the byte size of a numeric tensor of dtype and shape, as
// the receiving side computes it: hostile shapes and unknown types are
// errors, strings are 0.
func numericBytes(dtype int32, shape []int64) (int, error) {
	dt := runtime.DType(dtype)
	if dt == runtime.String {
		return 0, nil
	}
	if dt.Size() == 0 {
		return 0, fmt.Errorf("%w: tensor type %v", errFrame, dt)
	}
	n, err := runtime.Tensor{DType: dt, Shape: shape}.Elements()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errFrame, err)
	}
	if n > maxBufferBytes/int64(dt.Size()) {
		return 0, fmt.Errorf("%w: tensor of %d elements", errFrame, n)
	}
	return int(n) * dt.Size(), nil
}

// layout places tensors of the given byte sizes in the buffer: offsets and
// the total size.
func layout(sizes []int) (offsets []int, total int) {
	offsets = make([]int, len(sizes))
	for i, n := range sizes {
		offsets[i] = total
		total = alignUp(total + n)
	}
	return offsets, total
}

// fromBuffer points (plugin side) or copies (host side) each numeric
// tensor's data out of buf, laid out by layout; strings stay in the
// message.
func fromBuffer(ps []*flotillapb.Tensor, buf []byte, copyOut bool) ([]runtime.Tensor, error) {
	sizes := make([]int, len(ps))
	for i, p := range ps {
		n, err := numericBytes(p.GetDtype(), p.GetShape())
		if err != nil {
			return nil, err
		}
		if len(p.GetData()) != 0 {
			return nil, fmt.Errorf("%w: tensor %q has inline data", errFrame, p.GetName())
		}
		sizes[i] = n
	}
	offsets, total := layout(sizes)
	if total > len(buf) {
		return nil, fmt.Errorf("%w: tensors need %d bytes, the buffer has %d", errFrame, total, len(buf))
	}
	out := tensorsFromProto(ps)
	for i := range out {
		if out[i].DType == runtime.String {
			continue
		}
		data := buf[offsets[i] : offsets[i]+sizes[i] : offsets[i]+sizes[i]]
		if copyOut {
			data = append([]byte{}, data...)
		}
		out[i].Data = data
	}
	return out, nil
}

// toBuffer copies the tensors' numeric data into buf, laid out by layout,
// and returns their messages without it; ok is false when they do not fit.
func toBuffer(ts []runtime.Tensor, buf []byte) (ps []*flotillapb.Tensor, ok bool) {
	sizes := make([]int, len(ts))
	for i, t := range ts {
		sizes[i] = len(t.Data)
	}
	offsets, total := layout(sizes)
	if total > len(buf) {
		return nil, false
	}
	ps = make([]*flotillapb.Tensor, len(ts))
	for i, t := range ts {
		copy(buf[offsets[i]:], t.Data)
		t.Data = nil
		ps[i] = toProto(t)
	}
	return ps, true
}

// bufferBytes is what the tensors take in the buffer.
func bufferBytes(ts []runtime.Tensor) int {
	total := 0
	for _, t := range ts {
		total = alignUp(total + len(t.Data))
	}
	return total
}
