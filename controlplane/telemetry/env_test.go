package telemetry_test

import (
	"context"
	"crypto/x509"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

const (
	wait               = 10 * time.Second
	cpUser, cpPassword = "control", "control-secret"
)

var scheme = topic.Default()

type passwordAuth struct{}

func (passwordAuth) Authenticate(_ context.Context, _, user string, pw []byte, _ *x509.Certificate) (broker.Principal, error) {
	switch {
	case user == cpUser && string(pw) == cpPassword:
		return broker.Principal{Kind: broker.Service, ID: user}, nil
	case user != cpUser && topic.ValidID(user) == nil && string(pw) == "pw-"+user:
		return broker.Principal{Kind: broker.Device, ID: user}, nil
	}
	return broker.Principal{}, errors.New("bad username or password")
}

type schemeACL struct{}

func (schemeACL) CanPublish(p broker.Principal, t string) bool {
	if p.Kind == broker.Service {
		return scheme.ControlMay(t)
	}
	return scheme.DeviceMayPublish(p.ID, t)
}

func (schemeACL) CanSubscribe(p broker.Principal, f string) bool {
	if p.Kind == broker.Service {
		return scheme.ControlMay(f)
	}
	return scheme.DeviceMaySubscribe(p.ID, f)
}

func startBroker(t testing.TB) string {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Auth: passwordAuth{}, ACL: schemeACL{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return "tcp://" + b.Addr().String()
}

func connect(t testing.TB, url, id, user, pw string) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetUsername(user).SetPassword(pw).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(wait).SetWriteTimeout(wait).SetOrderMatters(false)
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", id, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

// controlSide is a control plane's telemetry ingest: a real SQLite store,
// a paho connection on the shared subscription, acks published back.
type controlSide struct {
	st     *store.Store
	in     *telemetry.Ingest
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	client paho.Client // replaced by subscribe after a broker restart
}

func (c *controlSide) conn() paho.Client {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client
}

// subscribe connects to the broker at url and takes the telemetry off the
// shared subscription into the ingest.
func (c *controlSide) subscribe(t testing.TB, url string) {
	t.Helper()
	cl := connect(t, url, "control-"+filepath.Base(t.TempDir()), cpUser, cpPassword)
	c.mu.Lock()
	c.client = cl
	c.mu.Unlock()
	tok := cl.Subscribe(c.in.Subscription("telemetry"), 1, func(_ paho.Client, m paho.Message) {
		c.in.Handle(c.ctx, m.Topic(), m.Payload())
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

// dropAcks, when set, decides to drop an ack instead of sending it (a lost
// ack on the way back).
type ackFilter func(a *pb.Ack) bool

func startControl(t testing.TB, url, dbPath string, drop ackFilter) *controlSide {
	t.Helper()
	st, err := store.OpenSQLite(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	c := &controlSide{st: st, done: make(chan struct{})}
	send := func(ctx context.Context, device string, a *pb.Ack) error {
		if drop != nil && drop(a) {
			return nil
		}
		b, err := wire.Encode(a)
		if err != nil {
			return err
		}
		tok := c.conn().Publish(scheme.Device(topic.Ack, device), 1, false, b)
		if !tok.WaitTimeout(wait) {
			return errors.New("ack publish timed out")
		}
		return tok.Error()
	}
	c.in = telemetry.NewIngest(st, send, telemetry.Options{Scheme: scheme})
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go func() {
		defer close(c.done)
		_ = c.in.Run(c.ctx)
	}()
	c.subscribe(t, url)
	return c
}

// stop takes the control side down abruptly: the connection first, then
// the ingest loop, then the store.
func (c *controlSide) stop() {
	c.conn().Disconnect(0)
	c.cancel()
	<-c.done
	c.st.Close()
}

// deviceSide is an agent's metrics buffer with a paho connection.
type deviceSide struct {
	id     string
	buf    *metrics.Buffer
	client paho.Client
	mu     sync.Mutex
	acked  int
}

func connectDevice(t testing.TB, url string, d *deviceSide) {
	t.Helper()
	d.client = connect(t, url, d.id, d.id, "pw-"+d.id)
	tok := d.client.Subscribe(scheme.Device(topic.Ack, d.id), 1, func(_ paho.Client, m paho.Message) {
		var a pb.Ack
		if err := wire.DecodeTopic(topic.Ack, m.Payload(), &a); err != nil {
			t.Errorf("ack: %v", err)
			return
		}
		n, err := d.buf.Ack(context.Background(), &a)
		if err != nil {
			t.Errorf("ack: %v", err)
		}
		d.mu.Lock()
		d.acked += n
		d.mu.Unlock()
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
}

func (d *deviceSide) publish(ctx context.Context, tm *pb.Telemetry) error {
	b, err := wire.Encode(tm)
	if err != nil {
		return err
	}
	tok := d.client.Publish(scheme.Device(topic.Telemetry, d.id), 1, false, b)
	if !tok.WaitTimeout(wait) {
		return errors.New("publish timed out")
	}
	return tok.Error()
}
