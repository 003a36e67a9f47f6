package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Network conditions for the end-to-end bundle tests: a TCP proxy between
// an agent and the broker that can trickle what the broker sends and cut
// every connection, and a Dialer (the agent's real paho dialer) that
// counts every chunk the agent receives, by bundle and hash.

// proxy relays TCP connections to upstream. Client → upstream runs at full
// speed; upstream → client at rate bytes per second when rate > 0.
type proxy struct {
	ln       net.Listener
	upstream string
	rate     atomic.Int64
	relayed  atomic.Int64 // bytes relayed to clients
	// slowAt, when set, is a relayed-bytes mark past which the proxy
	// trickles at slowRate (trickleAfter).
	slowAt, slowRate atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, upstream string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, upstream: upstream, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", p.upstream, wait)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[u] = true, true
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
		go func() { p.down(c, u); u.Close(); c.Close() }()
	}
}

// down copies upstream to the client, trickling while rate > 0: pieces
// of rate/20 bytes every 50 ms. Reading no faster than it writes, it
// leaves the backlog in the broker, as a slow link would.
func (p *proxy) down(c, u net.Conn) {
	buf := make([]byte, 8<<10)
	for {
		n, err := u.Read(buf)
		for b := buf[:n]; len(b) > 0; {
			k := len(b)
			if r := p.rate.Load(); r > 0 {
				k = min(k, max(1, int(r/20)))
				time.Sleep(50 * time.Millisecond)
			} else if mark := p.slowAt.Load(); mark > 0 {
				k = min(k, max(1, int(mark-p.relayed.Load())))
			}
			if _, werr := c.Write(b[:k]); werr != nil {
				return
			}
			if done := p.relayed.Add(int64(k)); p.slowAt.Load() > 0 && done >= p.slowAt.Load() {
				p.rate.CompareAndSwap(0, p.slowRate.Load())
				p.slowAt.Store(0)
			}
			b = b[k:]
		}
		if err != nil {
			return
		}
	}
}

// trickleAfter makes the proxy trickle at rate once n more bytes have
// been relayed: what it has passed on before cannot be slowed, and the
// agent's socket and MQTT client buffer far more than one chunk, so a
// switch made when the agent sees its first chunk may come after the
// whole bundle is already on its side.
func (p *proxy) trickleAfter(n, rate int64) {
	p.slowRate.Store(rate)
	p.slowAt.Store(p.relayed.Load() + n)
}

// fullSpeed ends a trickle, set or armed.
func (p *proxy) fullSpeed() {
	p.slowAt.Store(0)
	p.rate.Store(0)
}

// cut closes every relayed connection, dropping what is in flight.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
}

// chunkCounter wraps the agent's paho dialer and counts each chunk
// message the agent receives, per bundle and hash.
type chunkCounter struct {
	mu   sync.Mutex
	seen map[string]map[[32]byte]int
	// onChunk, if set, is called with each chunk's bundle before the
	// agent gets it.
	onChunk func(digest string)
}

func newChunkCounter() *chunkCounter { return &chunkCounter{seen: map[string]map[[32]byte]int{}} }

func (cc *chunkCounter) Dial(ctx context.Context, o agent.DialOptions) (agent.Conn, error) {
	deliver := o.OnMessage
	o.OnMessage = func(name string, payload []byte) {
		if k, _, ok := topic.Default().Parse(name); ok && (k == topic.BundleChunks || k == topic.ChunkRepair) {
			var c pb.Chunk
			if wire.DecodeTopic(topic.BundleChunks, payload, &c) == nil && len(c.GetSha256()) == 32 {
				cc.mu.Lock()
				if cc.seen[c.GetBundleDigest()] == nil {
					cc.seen[c.GetBundleDigest()] = map[[32]byte]int{}
				}
				cc.seen[c.GetBundleDigest()][[32]byte(c.GetSha256())]++
				hook := cc.onChunk
				cc.mu.Unlock()
				if hook != nil {
					hook(c.GetBundleDigest())
				}
			}
		}
		deliver(name, payload)
	}
	return agent.PahoDialer{}.Dial(ctx, o)
}

// received counts the chunk messages of digest received; again, those
// received more than once (each extra copy counts).
func (cc *chunkCounter) hook(f func(digest string)) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.onChunk = f
}

// counts is how many times each chunk of digest was received.
func (cc *chunkCounter) counts(digest string) map[[32]byte]int {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	out := map[[32]byte]int{}
	for k, v := range cc.seen[digest] {
		out[k] = v
	}
	return out
}

func (cc *chunkCounter) received(digest string) (received, again int) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for _, n := range cc.seen[digest] {
		received += n
		again += n - 1
	}
	return received, again
}

// fetchDeadline bounds each of a netAgent's bundle fetches. (Its Stall
// must exceed Quiet: a fetch that joins after a wave stores nothing before
// its first repair request, sent after Quiet.)
const fetchDeadline = 5 * time.Second

// netAgent is an agent that reaches the broker through a proxy, with its
// chunks counted; it can be stopped and started again on its data folder.
type netAgent struct {
	t       *testing.T // the (sub)test starting it
	logT    *testing.T // the test it lives in: its logs go there
	o       operator
	id      string
	dataDir string
	px      *proxy
	cc      *chunkCounter
	a       *agent.Agent
	stop    func()
	logs    *lines
}

// lines keeps what a logger wrote, line by line.
type lines struct {
	mu sync.Mutex
	l  []string
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, strings.Split(strings.TrimRight(string(p), "\n"), "\n")...)
	return len(p), nil
}

// find returns the first line holding every one of parts.
func (l *lines) find(parts ...string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
next:
	for _, line := range l.l {
		for _, p := range parts {
			if !strings.Contains(line, p) {
				continue next
			}
		}
		return line
	}
	return ""
}

func startNetAgent(t *testing.T, o operator, id string, px *proxy) *netAgent {
	t.Helper()
	c := adminClient(t, o.srv, o.dir)
	tok, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := &netAgent{t: t, logT: t, logs: &lines{}, o: o, id: id, dataDir: filepath.Join(t.TempDir(), id), px: px, cc: newChunkCounter()}
	n.start(tok.Token)
	t.Cleanup(func() { n.stop() })
	return n
}

// start runs an agent on the data folder (enrolling with token if given).
func (n *netAgent) start(token string) {
	n.t.Helper()
	a, err := agent.New(agent.Config{DataDir: n.dataDir, DeviceID: n.id, ServerURL: n.o.srv.APIURL(), EnrolToken: token,
		CAFingerprint: n.o.srv.CAFingerprint(), MQTTURL: "mqtts://" + n.px.addr(), HeartbeatInterval: 5 * time.Second,
		Version: "bundles-test", Logger: slog.New(slog.NewTextHandler(io.MultiWriter(testWriter{n.logT}, n.logs), nil)), Dialer: n.cc,
		Fetch: fetch.Options{Quiet: time.Second, Stall: 3 * time.Second, Deadline: fetchDeadline}})
	if err != nil {
		n.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = a.Run(ctx) }()
	n.a = a
	n.stop = sync.OnceFunc(func() { cancel(); <-done })
	eventually(n.t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
}

// heldChunks lists the chunks in the agent's chunk store.
func (n *netAgent) heldChunks(t *testing.T) map[[32]byte]bool {
	t.Helper()
	out := map[[32]byte]bool{}
	err := filepath.WalkDir(filepath.Join(n.dataDir, "bundles", "chunks"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if b, derr := hex.DecodeString(d.Name()); derr == nil && len(b) == 32 && !d.IsDir() {
			out[[32]byte(b)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (n *netAgent) fleet() *fleetAgent { return &fleetAgent{a: n.a, dataDir: n.dataDir} }

// reported is the device's reported state of the digits model.
func reported(srv interface{ ReportedModels(string) []*pb.ModelState }, id string) *pb.ModelState {
	for _, m := range srv.ReportedModels(id) {
		if m.GetName() == "digits" {
			return m
		}
	}
	return nil
}

// withBlob returns a change adding name: n random bytes from seed.
func withBlob(t *testing.T, name string, n int, seed uint64) func(string) {
	return func(dir string) {
		r := mrand.New(mrand.NewPCG(seed, 7))
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func sha256Sum(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// assertStaged waits until the agent has staged digits release rel.
func assertStaged(t *testing.T, dev *fleetAgent, rel uint64) {
	t.Helper()
	eventually(t, "release staged", func() bool { return dev.staged(t)["digits"].Release == rel })
}
