//go:build cgo && linux

package native

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/onnx"
)

// serveInProcess serves rt on one channel in this process, the plugin
// side's real code on a real socket pair, and returns the host's end.
func serveInProcess(t *testing.T, rt runtime.Runtime) (*Server, *channel) {
	t.Helper()
	srv := NewServer(rt)
	mine, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { serveChannel(peer, srv); close(done) }()
	ch := &channel{conn: mine}
	t.Cleanup(func() { ch.close(); <-done })
	return srv, ch
}

func loadIn(t *testing.T, srv *Server, entry string) string {
	t.Helper()
	resp, err := srv.Load(context.Background(), &flotillapb.LoadRequest{Dir: "../onnx/testdata", Entry: entry})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetModelId()
}

func openORT(t *testing.T) *onnx.Runtime {
	t.Helper()
	rt, err := onnx.Open(ortLib(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// TestChannelBufferGrowsAndInlines: the shared buffer starts small, grows
// to the next power of two for a 9 MiB input, and outputs that do not fit
// come back inline once, after which the buffer is grown for them.
func TestChannelBufferGrowsAndInlines(t *testing.T) {
	srv, ch := serveInProcess(t, openORT(t))
	ctx := context.Background()
	add := loadIn(t, srv, "add.onnx")

	out, callErr, ioErr := ch.infer(ctx, add, addInput(), 0)
	if callErr != nil || ioErr != nil || f32s(out[0].Data)[1] != 22 {
		t.Fatalf("add: %v %v %v", out, callErr, ioErr)
	}
	if len(ch.buf) != minBufferBytes {
		t.Fatalf("buffer %d bytes, want %d", len(ch.buf), minBufferBytes)
	}

	const n = 9 << 17 // 9 MiB of float32 pairs
	x := make([]float32, 2*n)
	for i := range x {
		x[i] = float32(i % 977)
	}
	out, callErr, ioErr = ch.infer(ctx, add, []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{n, 2}, Data: f32bytes(x)}}, 0)
	if callErr != nil || ioErr != nil {
		t.Fatal(callErr, ioErr)
	}
	if len(ch.buf) != 16<<20 {
		t.Fatalf("buffer %d bytes after a 9 MiB input, want 16 MiB", len(ch.buf))
	}
	y := f32s(out[0].Data)
	for i := range y {
		if want := x[i] + 10 + 10*float32(i%2); y[i] != want {
			t.Fatalf("y[%d] = %g, want %g", i, y[i], want)
		}
	}

	// A fresh channel without a buffer: the constant model's outputs come
	// back inline, and the next call has a buffer for them.
	srv2, ch2 := serveInProcess(t, openORT(t))
	constant := loadIn(t, srv2, "constant.onnx")
	for i := range 2 {
		out, callErr, ioErr := ch2.infer(ctx, constant, nil, 0)
		if callErr != nil || ioErr != nil {
			t.Fatal(callErr, ioErr)
		}
		if got := f32s(out[0].Data); len(got) != 2 || got[0] != 1.5 || got[1] != -2 || f32s(out[1].Data)[0] != 7 {
			t.Fatalf("call %d: %+v", i, out)
		}
		if i == 0 && (ch2.buf != nil || ch2.want != 2*bufferAlign) {
			t.Fatalf("after the inline reply: buffer %d, want %d", len(ch2.buf), ch2.want)
		}
	}
	if len(ch2.buf) != minBufferBytes {
		t.Fatalf("second call: buffer %d bytes", len(ch2.buf))
	}
}

// TestChannelCallErrorsKeepTheChannel: the plugin's refusals come back as
// the runtime's sentinel errors and the channel stays usable.
func TestChannelCallErrorsKeepTheChannel(t *testing.T) {
	srv, ch := serveInProcess(t, openORT(t))
	ctx := context.Background()
	add := loadIn(t, srv, "add.onnx")
	for name, c := range map[string]struct {
		id   string
		in   []runtime.Tensor
		want error
	}{
		"unknown model": {"m99", addInput(), runtime.ErrInvalidInput},
		"wrong shape":   {add, []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{1, 3}, Data: make([]byte, 12)}}, runtime.ErrInvalidInput},
		"wrong name":    {add, []runtime.Tensor{{Name: "q", DType: runtime.Float32, Shape: []int64{1, 2}, Data: make([]byte, 8)}}, runtime.ErrInvalidInput},
	} {
		_, callErr, ioErr := ch.infer(ctx, c.id, c.in, 0)
		if ioErr != nil || !errors.Is(callErr, c.want) {
			t.Errorf("%s: call error %v, io error %v; want %v", name, callErr, ioErr, c.want)
		}
	}
	if out, callErr, ioErr := ch.infer(ctx, add, addInput(), 0); callErr != nil || ioErr != nil || f32s(out[0].Data)[0] != 11 {
		t.Fatalf("after the errors: %v %v %v", out, callErr, ioErr)
	}
}

// rawFrame writes bytes to a channel the plugin side serves and reads what
// comes back: a reply frame, or end of file when it closed the channel.
func rawFrame(t *testing.T, srv *Server, data []byte, buf int) (kind byte, payload []byte, closed bool) {
	t.Helper()
	mine, peer, err := socketPair()
	if err != nil {
		t.Fatal(err)
	}
	defer mine.Close()
	done := make(chan struct{})
	go func() { serveChannel(peer, srv); close(done) }()
	if buf > 0 {
		c := &channel{conn: mine}
		if err := c.grow(buf); err != nil {
			t.Fatal(err)
		}
		defer unmapBuffer(c.buf)
	}
	if _, err := mine.Write(data); err != nil {
		t.Fatal(err)
	}
	halfClose(t, mine) // a truncated frame ends here
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(mine, hdr[:]); err != nil {
		<-done
		return 0, nil, true
	}
	kind, payload, err = readPayload(mine, hdr[:])
	if err != nil {
		t.Fatal(err)
	}
	shutdown(mine)
	<-done
	return kind, payload, false
}

// TestChannelRefusesHostileFrames: frames a broken or hostile peer could
// send get a clear error or a closed channel, never a crash or a read
// outside the buffer.
func TestChannelRefusesHostileFrames(t *testing.T) {
	srv := NewServer(openORT(t))
	add := ""
	{
		resp, err := srv.Load(context.Background(), &flotillapb.LoadRequest{Dir: "../onnx/testdata", Entry: "add.onnx"})
		if err != nil {
			t.Fatal(err)
		}
		add = resp.GetModelId()
	}
	req := func(in ...*flotillapb.Tensor) []byte {
		f, err := marshalFrame(kindInfer, &flotillapb.InferRequest{ModelId: add, Inputs: in})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	x := func(shape ...int64) *flotillapb.Tensor {
		return &flotillapb.Tensor{Name: "x", Dtype: int32(runtime.Float32), Shape: shape}
	}
	for name, c := range map[string]struct {
		data   []byte
		buf    int
		reply  string // "" when the channel must close
		answer string
	}{
		"past the buffer":    {req(x(1<<20, 2)), minBufferBytes, "error", "buffer has"},
		"no buffer at all":   {req(x(1, 2)), 0, "error", "buffer has 0"},
		"negative dimension": {req(x(-1, 2)), minBufferBytes, "error", "negative"},
		"overflowing shape":  {req(x(1<<40, 1<<40)), minBufferBytes, "error", "overflows"},
		"unknown dtype":      {req(&flotillapb.Tensor{Name: "x", Dtype: 77, Shape: []int64{1}}), minBufferBytes, "error", "type"},
		"inline data":        {req(&flotillapb.Tensor{Name: "x", Dtype: 1, Shape: []int64{1, 2}, Data: make([]byte, 8)}), minBufferBytes, "error", "inline"},
		"garbage message":    {appendFrame(nil, kindInfer, []byte{0xff, 0xff, 0xff}), minBufferBytes, "error", "invalid input"},
		"unknown kind":       {appendFrame(nil, 99, nil), minBufferBytes, "", ""},
		"buffer without fd":  {appendFrame(nil, kindBuffer, binary.LittleEndian.AppendUint64(nil, 1<<20)), 0, "", ""},
		"huge length":        {[]byte{0xff, 0xff, 0xff, 0xff, kindInfer}, 0, "", ""},
		"truncated frame":    {appendFrame(nil, kindInfer, []byte{1, 2, 3})[:6], 0, "", ""},
	} {
		kind, payload, closed := rawFrame(t, srv, c.data, c.buf)
		switch {
		case c.reply == "" && !closed:
			t.Errorf("%s: got a reply of kind %d, want the channel closed", name, kind)
		case c.reply == "error" && (closed || kind != kindError):
			t.Errorf("%s: closed %v, kind %d; want an error reply", name, closed, kind)
		case c.reply == "error":
			err := parseError(payload)
			if !errors.Is(err, runtime.ErrInvalidInput) || !strings.Contains(err.Error(), c.answer) {
				t.Errorf("%s: %v, want ErrInvalidInput mentioning %q", name, err, c.answer)
			}
		}
	}
}

// TestChannelRefusesHostileReplies: the host side checks what a plugin
// sends back the same way, and counts the channel broken.
func TestChannelRefusesHostileReplies(t *testing.T) {
	for name, reply := range map[string][]byte{
		"output past the buffer": must(marshalFrame(kindResult, &flotillapb.InferResponse{Outputs: []*flotillapb.Tensor{{Name: "y", Dtype: 1, Shape: []int64{1 << 20}}}})),
		"wrong string count":     must(marshalFrame(kindInline, &flotillapb.InferResponse{Outputs: []*flotillapb.Tensor{{Name: "y", Dtype: int32(runtime.String), Shape: []int64{3}, Strings: [][]byte{[]byte("a")}}}})),
		"short inline data":      must(marshalFrame(kindInline, &flotillapb.InferResponse{Outputs: []*flotillapb.Tensor{{Name: "y", Dtype: 1, Shape: []int64{4}, Data: make([]byte, 3)}}})),
		"unknown kind":           appendFrame(nil, 42, nil),
		"short error":            appendFrame(nil, kindError, []byte{1}),
		"closed":                 nil,
	} {
		mine, peer, err := socketPair()
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			// A fake plugin: reads the request (and the buffer frame), answers reply.
			defer peer.Close()
			hdr := make([]byte, frameHeader)
			for {
				fds, err := readHeader(peer, hdr)
				if err != nil {
					return
				}
				closeFds(fds)
				kind, _, err := readPayload(peer, hdr)
				if err != nil {
					return
				}
				if kind == kindInfer {
					if reply != nil {
						peer.Write(reply)
					}
					return
				}
			}
		}()
		ch := &channel{conn: mine}
		_, callErr, ioErr := ch.infer(context.Background(), "m1", addInput(), 0)
		if callErr != nil || ioErr == nil {
			t.Errorf("%s: call error %v, io error %v; want the channel broken", name, callErr, ioErr)
		}
		ch.close()
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// blockingRuntime is a stand-in for a model that runs long: Infer waits
// until release is closed. Only the cancellation test uses it.
type blockingRuntime struct{ release chan struct{} }

func (r blockingRuntime) Name() string { return "blocking" }
func (r blockingRuntime) Close() error { return nil }
func (r blockingRuntime) Load(context.Context, runtime.LoadSpec) (runtime.Model, error) {
	return blockingModel(r), nil
}

type blockingModel blockingRuntime

func (m blockingModel) Inputs() []runtime.TensorInfo  { return nil }
func (m blockingModel) Outputs() []runtime.TensorInfo { return nil }
func (m blockingModel) Close() error                  { return nil }
func (m blockingModel) Infer(context.Context, []runtime.Tensor) ([]runtime.Tensor, error) {
	<-m.release
	return nil, nil
}

// TestChannelCancel: a cancelled call returns at once with the context's
// error, and the channel is given up (its socket shut down), never reused.
func TestChannelCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	srv, ch := serveInProcess(t, blockingRuntime{release})
	resp, err := srv.Load(context.Background(), &flotillapb.LoadRequest{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	_, callErr, ioErr := ch.infer(ctx, resp.GetModelId(), nil, 0)
	if callErr != nil || !errors.Is(ioErr, context.Canceled) {
		t.Fatalf("call error %v, io error %v; want context.Canceled", callErr, ioErr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
	if _, err := ch.conn.Write([]byte{0}); err == nil {
		t.Fatal("the socket still takes writes after the cancel")
	}

	// Through a Plugin-style pool: the channel is not returned to it.
	cs := &channels{slots: make(chan struct{}, 1)}
	cs.slots <- struct{}{}
	cs.put(ch, true)
	if len(cs.idle) != 0 || len(cs.slots) != 0 {
		t.Fatalf("broken channel pooled: %d idle, %d slots", len(cs.idle), len(cs.slots))
	}
	ch.conn = nil // closed by put
}

// TestConcurrentCallsThroughChannels: many goroutines at once, each with
// its own input, each gets its own answer (no crossed buffers), over the
// real plugin process.
func TestConcurrentCallsThroughChannels(t *testing.T) {
	p := startONNX(t)
	if p.ProtocolVersion() != ProtocolVersion {
		t.Fatalf("negotiated protocol %d, want %d", p.ProtocolVersion(), ProtocolVersion)
	}
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				// Rows grow with i so buffers grow while others are in use.
				rows := 1 + (g*50+i)%300
				x := make([]float32, 2*rows)
				for j := range x {
					x[j] = float32(g*1000 + i)
				}
				out, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{int64(rows), 2}, Data: f32bytes(x)}})
				if err != nil {
					errs <- err
					return
				}
				y := f32s(out[0].Data)
				if len(y) != 2*rows || y[0] != x[0]+10 || y[len(y)-1] != x[0]+20 {
					errs <- errors.New("goroutine got another call's answer")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	p.mu.RLock()
	cs := p.chans
	p.mu.RUnlock()
	if n := len(cs.idle); n < 2 || n > cap(cs.slots) {
		t.Errorf("%d idle channels after 16 concurrent callers, limit %d", n, cap(cs.slots))
	}
}

// TestGRPCPathStillServes: a host that does not offer channels (as one
// speaking protocol 1) gets the same answers over gRPC.
func TestGRPCPathStillServes(t *testing.T) {
	cfg := testConfig(t)
	cfg.grpcOnly = true
	p, err := Start(context.Background(), pluginDir+"/flotilla-runtime-onnx", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.chans != nil {
		t.Fatal("channels open with grpcOnly")
	}
	m, err := p.Load(context.Background(), runtime.LoadSpec{Dir: "../onnx/testdata", Entry: "add.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	out, err := m.Infer(context.Background(), addInput())
	if err != nil || f32s(out[0].Data)[1] != 22 {
		t.Fatalf("%v %v", out, err)
	}
	// Invalid tensors take the gRPC path on a channel plugin too, and the
	// plugin's own error comes back.
	if _, err := m.Infer(context.Background(), []runtime.Tensor{{Name: "x", DType: runtime.Float32, Shape: []int64{1, 2}, Data: make([]byte, 3)}}); !errors.Is(err, runtime.ErrInvalidInput) {
		t.Fatalf("short data: %v", err)
	}
}

func halfClose(t *testing.T, f *os.File) {
	t.Helper()
	if err := unix.Shutdown(int(f.Fd()), unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
}
