package native

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	goruntime "runtime"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// channels is the host's pool of Infer channels to one plugin process (see
// frame.go). It holds at most one channel per concurrent call, up to a
// limit; a call beyond it waits for a channel to come free.
type channels struct {
	boot   *os.File      // bootstrap socket: new channels go over it
	slots  chan struct{} // one token per channel open or being opened
	mu     sync.Mutex    // guards idle, closed and writes to boot
	idle   []*channel
	closed bool
}

var errChannelsClosed = errors.New("infer channels closed")

// newChannels makes the bootstrap socket pair; the plugin process gets
// peer as descriptor 3.
func newChannels() (cs *channels, peer *os.File, err error) {
	boot, peer, err := socketPair()
	if err != nil {
		return nil, nil, err
	}
	limit := max(4, 2*goruntime.GOMAXPROCS(0))
	return &channels{boot: boot, slots: make(chan struct{}, limit)}, peer, nil
}

// get returns an idle channel or opens one.
func (cs *channels) get(ctx context.Context) (*channel, error) {
	select {
	case cs.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cs.mu.Lock()
	if n := len(cs.idle); n > 0 && !cs.closed {
		c := cs.idle[n-1]
		cs.idle = cs.idle[:n-1]
		cs.mu.Unlock()
		return c, nil
	}
	cs.mu.Unlock()
	c, err := cs.open()
	if err != nil {
		<-cs.slots
		return nil, err
	}
	return c, nil
}

// open makes a channel and hands its other end to the plugin.
func (cs *channels) open() (*channel, error) {
	conn, peer, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer peer.Close()
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		conn.Close()
		return nil, errChannelsClosed
	}
	if err := sendFile(cs.boot, []byte{'c'}, peer); err != nil {
		conn.Close()
		return nil, fmt.Errorf("pass a channel to the plugin: %w", err)
	}
	return &channel{conn: conn}, nil
}

// put returns a channel to the pool; a broken one is closed.
func (cs *channels) put(c *channel, broken bool) {
	cs.mu.Lock()
	if broken || cs.closed {
		cs.mu.Unlock()
		c.close()
	} else {
		cs.idle = append(cs.idle, c)
		cs.mu.Unlock()
	}
	<-cs.slots
}

// close closes the idle channels and the bootstrap socket; channels in use
// close when they come back.
func (cs *channels) close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	if cs.closed {
		return
	}
	cs.closed = true
	for _, c := range cs.idle {
		c.close()
	}
	cs.idle = nil
	cs.boot.Close()
}

// channel is one socket to the plugin and its shared buffer.
type channel struct {
	conn *os.File
	buf  []byte
	want int // buffer size the last inline reply asked for
}

func (c *channel) close() {
	c.conn.Close()
	unmapBuffer(c.buf)
	c.buf = nil
}

// infer runs one call. callErr is the plugin's answer (the channel stays
// usable); ioErr means the channel is broken.
func (c *channel) infer(ctx context.Context, id string, inputs []runtime.Tensor, outHint int) (out []runtime.Tensor, callErr, ioErr error) {
	need := max(bufferBytes(inputs), min(max(outHint, c.want), maxBufferBytes))
	if need > maxBufferBytes {
		return nil, fmt.Errorf("%w: inputs of %d bytes exceed %d", runtime.ErrInvalidInput, need, maxBufferBytes), nil
	}
	if need > len(c.buf) {
		if err := c.grow(need); err != nil {
			return nil, nil, err
		}
	}
	ps, _ := toBuffer(inputs, c.buf) // fits: the buffer was grown to need
	frame, err := marshalFrame(kindInfer, &flotillapb.InferRequest{ModelId: id, Inputs: ps})
	if err != nil {
		return nil, err, nil
	}

	if ctx.Done() != nil {
		// Cancelled or past its deadline: wake the read and give up the
		// channel (the plugin still finishes the call; its reply has
		// nowhere to go).
		woken := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { shutdown(c.conn); close(woken) })
		defer func() {
			if !stop() {
				<-woken // the socket is shut down: never reuse it
				out, callErr, ioErr = nil, nil, ctx.Err()
			}
		}()
	}
	if _, err := c.conn.Write(frame); err != nil {
		return nil, nil, err
	}
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(c.conn, hdr[:]); err != nil {
		return nil, nil, err
	}
	kind, payload, err := readPayload(c.conn, hdr[:])
	if err != nil {
		return nil, nil, err
	}
	switch kind {
	case kindError:
		callErr := parseError(payload)
		if errors.Is(callErr, errFrame) {
			return nil, nil, callErr
		}
		return nil, callErr, nil
	case kindResult, kindInline:
	default:
		return nil, nil, fmt.Errorf("%w: reply of kind %d", errFrame, kind)
	}
	var resp flotillapb.InferResponse
	if err := proto.Unmarshal(payload, &resp); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errFrame, err)
	}
	if kind == kindResult {
		out, err = fromBuffer(resp.GetOutputs(), c.buf, true)
	} else {
		out = tensorsFromProto(resp.GetOutputs())
		c.want = bufferBytes(out)
	}
	if err != nil {
		return nil, nil, err
	}
	for _, t := range out {
		if err := t.Validate(); err != nil {
			return nil, nil, fmt.Errorf("%w: output: %w", errFrame, err)
		}
	}
	return out, nil, nil
}

// grow replaces the buffer by one of at least need bytes (a power of two)
// and passes it to the plugin.
func (c *channel) grow(need int) error {
	size := max(minBufferBytes, 1<<bits.Len(uint(need-1)))
	size = min(size, maxBufferBytes)
	f, mem, err := newBuffer(size)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := sendFile(c.conn, appendFrame(nil, kindBuffer, binary.LittleEndian.AppendUint64(nil, uint64(size))), f); err != nil {
		unmapBuffer(mem)
		return err
	}
	unmapBuffer(c.buf)
	c.buf = mem
	return nil
}

// channelable reports whether the tensors can go over a channel: the
// plugin finds each one's data by its type and shape, so they must agree.
// Anything else goes over gRPC, where the plugin reports what is wrong.
func channelable(ts []runtime.Tensor) bool {
	for _, t := range ts {
		if t.Validate() != nil {
			return false
		}
	}
	return true
}

// outputBytes estimates the buffer the outputs need: those with a static
// shape, laid out.
func outputBytes(infos []runtime.TensorInfo) int {
	total := 0
	for _, info := range infos {
		n, err := numericBytes(int32(info.DType), info.Shape)
		if err != nil {
			continue // dynamic or not numeric
		}
		total = alignUp(total + n)
	}
	return total
}
