package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// errKicked is the stop cause of a connection dropped by Disconnect.
var errKicked = errors.New("disconnected by the control plane")

// conn is one accepted connection. mochi keeps it as the client's
// net.Conn, which is how the hook finds the connection's principal without
// asking the Authenticator again; it lives and dies with the connection.
type conn struct {
	net.Conn
	e *Embedded

	principal atomic.Pointer[Principal] // set once authenticated
	client    atomic.Pointer[mqtt.Client]

	pendingOnce sync.Once
	closeOnce   sync.Once
}

// Principal returns who the connection authenticated as.
func (c *conn) Principal() (Principal, bool) {
	p := c.principal.Load()
	if p == nil {
		return Principal{}, false
	}
	return *p, true
}

// peerCert returns the client certificate the TLS layer verified, or nil.
func (c *conn) peerCert() *x509.Certificate {
	tc, ok := c.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if len(st.VerifiedChains) == 0 || len(st.PeerCertificates) == 0 {
		return nil // none offered, or not verified (ClientAuth below VerifyClientCertIfGiven)
	}
	return st.PeerCertificates[0]
}

// authenticated ends the connection's pending stage.
func (c *conn) authenticated() {
	c.pendingOnce.Do(func() { <-c.e.pending })
}

// kick drops the connection without publishing its will: a DISCONNECT
// with reason "not authorized" for MQTT 5 clients (3.1.1 has no server
// DISCONNECT), then close. The will is dropped because the principal is
// revoked, and because a will published late would re-create the retained
// topics the caller of Disconnect is about to clear.
func (c *conn) kick() {
	cl := c.client.Load()
	if cl == nil {
		_ = c.Close()
		return
	}
	atomic.StoreUint32(&cl.Properties.Will.Flag, 0)
	if cl.Properties.ProtocolVersion >= 5 {
		_ = c.e.server.DisconnectClient(cl, packets.ErrNotAuthorized)
	}
	cl.Stop(errKicked)
}

// Close frees the connection's pending slot before closing the socket, so
// a peer that sees the close can connect again at once.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.authenticated()
		c.e.live.remove(c)
	})
	return c.Conn.Close()
}

// tracker indexes live connections: all of them, to close them at
// shutdown, and the authenticated ones by principal ID, for Disconnect.
type tracker struct {
	mu   sync.Mutex
	gen  uint64 // bumped by every take
	all  map[*conn]struct{}
	byID map[string]map[*conn]struct{}
}

func newTracker() *tracker {
	return &tracker{all: map[*conn]struct{}{}, byID: map[string]map[*conn]struct{}{}}
}

// generation is read before authenticating; bind fails if a take happened
// since, so a Disconnect that races an authentication is never missed.
func (t *tracker) generation() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.gen
}

func (t *tracker) add(c *conn) {
	t.mu.Lock()
	t.all[c] = struct{}{}
	t.mu.Unlock()
}

// bind attaches the principal to an authenticated connection and files it
// under the principal's ID, unless a Disconnect ran since generation gen or
// the connection is already closed.
func (t *tracker) bind(c *conn, p Principal, cl *mqtt.Client, gen uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gen != gen {
		return false
	}
	if _, open := t.all[c]; !open {
		return false
	}
	c.principal.Store(&p)
	c.client.Store(cl)
	set := t.byID[p.ID]
	if set == nil {
		set = map[*conn]struct{}{}
		t.byID[p.ID] = set
	}
	set[c] = struct{}{}
	return true
}

func (t *tracker) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.all, c)
	if p, ok := c.Principal(); ok {
		if set := t.byID[p.ID]; set != nil {
			delete(set, c)
			if len(set) == 0 {
				delete(t.byID, p.ID)
			}
		}
	}
}

// take unfiles and returns every connection of principal id.
func (t *tracker) take(id string) []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.gen++
	set := t.byID[id]
	delete(t.byID, id)
	out := make([]*conn, 0, len(set))
	for c := range set {
		out = append(out, c)
	}
	return out
}

// everything returns every open connection.
func (t *tracker) everything() []*conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]*conn, 0, len(t.all))
	for c := range t.all {
		out = append(out, c)
	}
	return out
}
