package broker

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

const wait = 10 * time.Second

var errBadCredentials = errors.New("bad username or password")

// fakeAuth is a small Authenticator: users with SHA-256 password hashes,
// and device certificates whose CN is the username. Like a careless
// implementation it does not compare client ID and username: the broker
// must.
type fakeAuth struct {
	mu    sync.Mutex
	users map[string]fakeUser
}

type fakeUser struct {
	kind Kind
	hash [sha256.Size]byte
}

func newFakeAuth() *fakeAuth { return &fakeAuth{users: map[string]fakeUser{}} }

func (a *fakeAuth) add(kind Kind, name, password string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users[name] = fakeUser{kind: kind, hash: sha256.Sum256([]byte(password))}
}

func (a *fakeAuth) revoke(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.users, name)
}

func (a *fakeAuth) Authenticate(_ context.Context, _, username string, password []byte, cert *x509.Certificate) (Principal, error) {
	a.mu.Lock()
	u, ok := a.users[username]
	a.mu.Unlock()
	if !ok {
		return Principal{}, errBadCredentials
	}
	if cert != nil && len(password) == 0 && cert.Subject.CommonName == username {
		return Principal{Kind: u.kind, ID: username}, nil
	}
	if sha256.Sum256(password) != u.hash {
		return Principal{}, errBadCredentials
	}
	return Principal{Kind: u.kind, ID: username}, nil
}

// fakeACL lets a device touch only dev/<id>/..., a service everything;
// with allowAll it allows everyone everything (to test the broker's own
// rules). It records the filters it was asked about.
type fakeACL struct {
	allowAll bool
	mu       sync.Mutex
	asked    []string
}

func (a *fakeACL) own(p Principal, t string) bool {
	return a.allowAll || p.Kind == Service || strings.HasPrefix(t, "dev/"+p.ID+"/")
}

func (a *fakeACL) CanPublish(p Principal, topic string) bool { return a.own(p, topic) }

func (a *fakeACL) CanSubscribe(p Principal, filter string) bool {
	a.mu.Lock()
	a.asked = append(a.asked, filter)
	a.mu.Unlock()
	return a.own(p, filter)
}

// env is a running broker with its fakes.
type env struct {
	b    *Embedded
	auth *fakeAuth
	acl  *fakeACL
	url  string
}

func start(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	e := &env{auth: newFakeAuth(), acl: &fakeACL{}}
	e.auth.add(Service, "control", "service-secret")
	e.auth.add(Device, "dev-a", "secret-a")
	e.auth.add(Device, "dev-b", "secret-b")
	cfg := Config{Addr: "127.0.0.1:0", Auth: e.auth, ACL: e.acl}
	if mod != nil {
		mod(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	e.b = b
	scheme := "tcp://"
	if cfg.TLS != nil {
		scheme = "ssl://"
	}
	e.url = scheme + b.Addr().String()
	return e
}

// options are paho options for a plain MQTT 3.1.1 client that neither
// retries nor reconnects.
func (e *env) options(clientID, user, pass string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(e.url).
		SetClientID(clientID).SetUsername(user).SetPassword(pass).
		SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(wait)
}

func (e *env) dial(t testing.TB, o *paho.ClientOptions) (paho.Client, error) {
	t.Helper()
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		return nil, errors.New("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (e *env) mustDial(t testing.TB, clientID, user, pass string) paho.Client {
	t.Helper()
	c, err := e.dial(t, e.options(clientID, user, pass))
	if err != nil {
		t.Fatalf("connect %s: %v", clientID, err)
	}
	return c
}

func (e *env) service(t testing.TB) paho.Client {
	t.Helper()
	return e.mustDial(t, "control-1", "control", "service-secret")
}

// subscribe subscribes and returns the channel messages arrive on and the
// SUBACK return code.
func subscribe(t testing.TB, c paho.Client, filter string) (<-chan paho.Message, byte) {
	t.Helper()
	ch := make(chan paho.Message, 64)
	tok := c.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { ch <- m })
	if !tok.WaitTimeout(wait) {
		t.Fatalf("subscribe %s timed out", filter)
	}
	if err := tok.Error(); err != nil {
		return ch, 0x80
	}
	for _, code := range tok.(*paho.SubscribeToken).Result() {
		return ch, code // one filter; paho keys it without any $share/group/
	}
	t.Fatalf("no SUBACK code for %s", filter)
	return nil, 0
}

func publish(t testing.TB, c paho.Client, topic string, qos byte, retained bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, qos, retained, payload)
	if !tok.WaitTimeout(wait) {
		t.Fatalf("publish %s timed out", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func receive(t testing.TB, ch <-chan paho.Message) paho.Message {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(wait):
		t.Fatal("no message")
		return nil
	}
}

// rawDialer returns a paho connection opener that hands the raw TCP
// connection to got, so a test can cut it without a DISCONNECT.
func rawDialer(got chan<- net.Conn) paho.OpenConnectionFunc {
	return func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
		c, err := net.DialTimeout("tcp", u.Host, wait)
		if err == nil {
			got <- c
		}
		return c, err
	}
}
