package broker

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
)

// listener is a mochi listener over a net.Listener we opened ourselves
// (so Addr knows the real port before any client connects). Unlike mochi's
// own listeners it bounds the TLS handshake and CONNECT with a deadline,
// caps connections that have not authenticated yet, and wraps each
// connection in a conn that carries its principal.
type listener struct {
	id   string
	ln   net.Listener
	e    *Embedded
	end  atomic.Bool
	wg   sync.WaitGroup // one per establish goroutine
	done chan struct{}  // closed when Serve returns
	once sync.Once
}

var _ listeners.Listener = (*listener)(nil)

func newListener(id string, ln net.Listener, e *Embedded) *listener {
	return &listener{id: id, ln: ln, e: e, done: make(chan struct{})}
}

func (l *listener) ID() string      { return l.id }
func (l *listener) Address() string { return l.ln.Addr().String() }

func (l *listener) Protocol() string {
	if l.e.cfg.TLS != nil {
		return "mqtts"
	}
	return "mqtt"
}

// Init does nothing: the socket is already open.
func (l *listener) Init(*slog.Logger) error { return nil }

// Serve accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	defer close(l.done)
	var backoff time.Duration
	for {
		raw, err := l.ln.Accept()
		if err != nil {
			if l.end.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.e.log.Warn("mqtt accept", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		select {
		case l.e.pending <- struct{}{}:
		default:
			l.e.stats.shed.Add(1)
			_ = raw.Close()
			continue
		}
		_ = raw.SetDeadline(time.Now().Add(l.e.cfg.ConnectTimeout)) // mochi replaces it with the keep-alive after CONNECT
		var nc net.Conn = raw
		if l.e.cfg.TLS != nil {
			nc = tls.Server(raw, l.e.cfg.TLS)
		}
		c := &conn{Conn: nc, e: l.e}
		l.e.live.add(c)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			if err := establish(l.id, c); err != nil {
				l.e.log.Debug("mqtt connection ended", "remote", raw.RemoteAddr().String(), "err", err)
			}
		}()
	}
}

// Close stops accepting, disconnects its clients as mochi would, closes
// what is left (connections still authenticating) and waits for every
// connection goroutine, so mochi's own wait that follows finds nothing
// running.
//
// It does not call mochi's closeClients: that lists the clients through
// Clients.GetByListener, which takes the clients' read lock twice (it
// calls Len under it), and a client leaving at that moment asks for the
// write lock in between: sync.RWMutex then blocks the second read lock
// for good and the broker never closes (seen in a CI run, mochi v2.7.9).
// GetAll takes the lock once.
func (l *listener) Close(listeners.CloseFn) {
	l.once.Do(func() {
		l.end.Store(true)
		_ = l.ln.Close()
		<-l.done
		for _, cl := range l.e.server.Clients.GetAll() {
			if cl.Net.Listener == l.id && !cl.Closed() {
				_ = l.e.server.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
		for _, c := range l.e.live.everything() {
			_ = c.Close()
		}
		l.wg.Wait()
	})
}
