package agent

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// testFacts are fixed facts, so tests do not depend on the host.
func testFacts() *flotillapb.Facts {
	return &flotillapb.Facts{Os: "linux", Arch: "arm64", CpuModel: "test cpu", CpuCores: 4, CpuFeatures: []string{"neon"}}
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("AGENT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// testConfig is an agent config enrolling with srv, pinning its CA.
func testConfig(t testing.TB, srv *agenttest.Server, id string) Config {
	return Config{
		DataDir:       t.TempDir(),
		DeviceID:      id,
		ServerURL:     srv.URL(),
		EnrolToken:    srv.Token(),
		CAFingerprint: srv.CAFingerprint(),
		Labels:        map[string]string{"site": "lab"},
		Version:       "1.2.3-test",
		Facts:         testFacts,
		Logger:        testLogger(t),
	}
}

// running is an agent running in the background.
type running struct {
	*Agent
	cancel context.CancelFunc
	done   chan error
}

func start(t testing.TB, cfg Config) *running {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels the agent and returns Run's error.
func (r *running) stop(t testing.TB) error {
	t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		r.done <- err // a second stop gets the same answer
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("agent did not stop")
		return nil
	}
}

// wait returns Run's error once it returns by itself.
func (r *running) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
		return nil
	}
}

// eventually polls cond until it holds, failing after a while.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// cutDialer is the paho dialer keeping hold of its TCP connections, so a
// test can cut them as a network failure would.
type cutDialer struct {
	PahoDialer
	mu    sync.Mutex
	conns []*cutConn
}

// cutConn fails reads and writes with a reset-like error once cut, the way
// a network failure does. (A plain Close would not do: paho takes "use of
// closed network connection" for its own deliberate close and does not
// report the loss until the keepalive runs out.)
type cutConn struct {
	net.Conn
	cut atomic.Bool
}

var errCut = errors.New("connection reset by test")

func (c *cutConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.cut.Load() {
		return 0, errCut
	}
	return n, err
}

func (c *cutConn) Write(b []byte) (int, error) {
	if c.cut.Load() {
		return 0, errCut
	}
	return c.Conn.Write(b)
}

func newCutDialer() *cutDialer {
	d := &cutDialer{}
	d.NetDial = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cc := &cutConn{Conn: c}
		d.mu.Lock()
		d.conns = append(d.conns, cc)
		d.mu.Unlock()
		return cc, nil
	}
	return d
}

// cut closes every connection made so far.
func (d *cutDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.cut.Store(true)
		c.Conn.Close()
	}
	d.conns = nil
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }
