package delivery_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

const (
	cpUser, cpPassword = "control", "control-secret"
	wait               = 20 * time.Second
)

var scheme = topic.Default()

func devicePassword(id string) string { return "pw-" + id }

// brokerEnv is a running broker, embedded or Mosquitto.
type brokerEnv struct {
	name     string
	url      string
	embedded *broker.Embedded // nil for Mosquitto
}

// passwordAuth is a test Authenticator with fixed passwords: the control
// plane's user and devices whose password is devicePassword(id). The
// registry's real one needs a database the tests do not need.
type passwordAuth struct{}

func (passwordAuth) Authenticate(_ context.Context, _, user string, pw []byte, _ *x509.Certificate) (broker.Principal, error) {
	switch {
	case user == cpUser && string(pw) == cpPassword:
		return broker.Principal{Kind: broker.Service, ID: user}, nil
	case user != cpUser && topic.ValidID(user) == nil && string(pw) == devicePassword(user):
		return broker.Principal{Kind: broker.Device, ID: user}, nil
	}
	return broker.Principal{}, errors.New("bad username or password")
}

// schemeACL enforces the topic table, as the control plane's does.
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

func startEmbedded(t testing.TB) brokerEnv {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Auth: passwordAuth{}, ACL: schemeACL{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return brokerEnv{name: "mochi", url: "tcp://" + b.Addr().String(), embedded: b}
}

func startMosquitto(t testing.TB, devices []string) brokerEnv {
	t.Helper()
	var lines []string
	for _, u := range append([][2]string{{cpUser, cpPassword}}, pairs(devices)...) {
		l, err := mosquitto.PasswordLine(u[0], u[1])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Static: true,
		Passwords: strings.Join(lines, "\n") + "\n", ACL: scheme.MosquittoACL(cpUser)})
	return brokerEnv{name: "mosquitto", url: b.URL()}
}

func pairs(devices []string) [][2]string {
	var out [][2]string
	for _, d := range devices {
		out = append(out, [2]string{d, devicePassword(d)})
	}
	return out
}

func deviceIDs(n int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("dev-%03d", i))
	}
	return out
}

// device is one agent's MQTT connection, which the test can cut.
type device struct {
	id     string
	client paho.Client
	mu     sync.Mutex
	nc     net.Conn
}

// dial connects device id with a clean session: after a cut the broker
// keeps nothing for it, so every chunk it gets later is one it asked for
// or one of a wave still running.
func dial(t testing.TB, env brokerEnv, id string) *device {
	t.Helper()
	d := &device{id: id}
	u, _ := url.Parse(env.url)
	o := paho.NewClientOptions().AddBroker(env.url).SetClientID(id).
		SetUsername(id).SetPassword(devicePassword(id)).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(wait).SetWriteTimeout(wait).SetOrderMatters(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			nc, err := net.DialTimeout("tcp", u.Host, wait)
			d.mu.Lock()
			d.nc = nc
			d.mu.Unlock()
			return nc, err
		})
	d.client = connect(t, o)
	return d
}

func connect(t testing.TB, o *paho.ClientOptions) paho.Client {
	t.Helper()
	c := paho.NewClient(o)
	if tok := c.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect %s: %v", o.ClientID, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c
}

func (d *device) conn() fetch.Conn { return fetch.Paho(d.client, wait) }

// cut closes the device's TCP connection under paho, as a network fault.
func (d *device) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.nc != nil {
		d.nc.Close()
	}
}

// pahoPublisher is delivery.Publisher over a paho client.
type pahoPublisher struct{ c paho.Client }

func (p pahoPublisher) Publish(ctx context.Context, t string, qos byte, retained bool, payload []byte) error {
	tok := p.c.Publish(t, qos, retained, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// control is the control plane's side: a connection, the Repairer serving
// from store.
type control struct {
	client paho.Client
	pub    pahoPublisher
	store  *bundle.Store
	rep    *delivery.Repairer
}

func startControl(t testing.TB, env brokerEnv, store *bundle.Store, ro delivery.RepairOptions) *control {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(env.url).SetClientID("control-" + rand.Text()[:8]).
		SetUsername(cpUser).SetPassword(cpPassword).SetProtocolVersion(4).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectTimeout(wait).SetWriteTimeout(wait).SetOrderMatters(false)
	c := &control{client: connect(t, o), store: store}
	c.pub = pahoPublisher{c.client}
	c.rep = delivery.NewRepairer(store, c.pub, ro)
	tok := c.client.Subscribe(c.rep.Filter(), 1, func(_ paho.Client, m paho.Message) {
		if err := c.rep.Handle(m.Topic(), m.Payload()); err != nil {
			t.Logf("repair: %v", err)
		}
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", c.rep.Filter(), tok.Error())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.rep.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func (c *control) wave(t testing.TB, digest string, o delivery.WaveOptions) delivery.WaveStats {
	t.Helper()
	w, err := delivery.NewWave(c.store, c.pub, digest, o)
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// bundleDir makes a bundle folder: the digits model (testdata of
// controlplane/bundle, from /work/shared/models/digits) and mib MiB of
// random data in 1 MiB files, from seed.
func bundleDir(t testing.TB, mib int, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "bundle", "testdata", "digits"))); err != nil {
		t.Fatal(err)
	}
	r := mrand.New(mrand.NewPCG(seed, 1))
	for i := range mib {
		writeRandom(t, filepath.Join(dir, "data", fmt.Sprintf("blob-%02d.bin", i)), 1<<20, r)
	}
	return dir
}

func writeRandom(t testing.TB, path string, n int, r *mrand.Rand) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// build builds dir into store and returns the digest and manifest.
func build(t testing.TB, store *bundle.Store, dir string) (string, *pb.BundleManifest) {
	t.Helper()
	raw, digest, err := bundle.Build(dir, bundle.Options{Chunks: store})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.PutManifest(raw); err != nil {
		t.Fatal(err)
	}
	_, m, err := store.Manifest(digest)
	if err != nil {
		t.Fatal(err)
	}
	return digest, m
}

func newStore(t testing.TB) *bundle.Store {
	t.Helper()
	s, err := bundle.OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
