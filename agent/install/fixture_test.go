package install_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// The fixture is the control plane's side built from its real parts: an
// embedded broker (controlplane/broker), the release repository and the
// director (controlplane/release), bundles built from the digits model
// (controlplane/bundle) and the delivery Repairer answering chunk
// requests. The device side is the Installer under test on a paho
// connection whose TCP socket the test can cut. Nothing is faked.

const (
	wait               = 15 * time.Second
	cpUser, cpPassword = "control", "control-secret"
	device             = "dev-1"
	model              = "digits"
)

var scheme = topic.Default()

func devicePassword(id string) string { return "pw-" + id }

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

type fixture struct {
	t        *testing.T
	url      string
	store    *bundle.Store
	tgtKeys  []*release.Key
	online   *release.Key
	repo     *release.Repository
	director *release.Director
	dirVer   int64
	ctl      paho.Client
	rep      *delivery.Repairer
	refuse   sync.Map // digest → true: the Repairer does not serve it
	dir      string   // the installer's folder

	mu       sync.Mutex
	progress []*pb.FetchProgress
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	b, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Auth: passwordAuth{}, ACL: schemeACL{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	f := &fixture{t: t, url: "tcp://" + b.Addr().String(), dir: filepath.Join(t.TempDir(), "install")}
	if f.store, err = bundle.OpenStore(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	gen := func(role string, n int) []*release.Key {
		var ks []*release.Key
		for range n {
			k, err := release.GenerateKey(role)
			if err != nil {
				t.Fatal(err)
			}
			ks = append(ks, k)
		}
		return ks
	}
	rootKeys, dirKey := gen(release.RoleRoot, 3), gen(release.RoleOnline, 1)[0]
	f.tgtKeys, f.online = gen(release.RoleTargets, 3), gen(release.RoleOnline, 1)[0]
	now := time.Now()
	if f.repo, err = release.Init(release.RootKeys{Root: rootKeys, Targets: f.tgtKeys, Online: f.online, Threshold: 2}, now, release.DefaultExpiry); err != nil {
		t.Fatal(err)
	}
	if f.director, err = release.NewDirector(dirKey, now, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := install.Provision(f.dir, f.repo.Roots[0], f.director.Root()); err != nil {
		t.Fatal(err)
	}

	o := paho.NewClientOptions().AddBroker(f.url).SetClientID("control").SetUsername(cpUser).SetPassword(cpPassword).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectTimeout(wait).SetOrderMatters(false)
	f.ctl = paho.NewClient(o)
	if tok := f.ctl.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("control connect: %v", tok.Error())
	}
	t.Cleanup(func() { f.ctl.Disconnect(0) })
	f.rep = delivery.NewRepairer(f.store, pahoPublisher{f.ctl}, delivery.RepairOptions{Offered: func(_, digest string) bool {
		_, refused := f.refuse.Load(digest)
		return !refused
	}})
	f.subscribe(f.rep.Filter(), func(m paho.Message) { _ = f.rep.Handle(m.Topic(), m.Payload()) })
	f.subscribe(scheme.AllDevices(topic.Progress), func(m paho.Message) {
		var p pb.FetchProgress
		if wire.DecodeTopic(topic.Progress, m.Payload(), &p) == nil {
			f.mu.Lock()
			f.progress = append(f.progress, &p)
			f.mu.Unlock()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.rep.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return f
}

func (f *fixture) subscribe(filter string, h func(paho.Message)) {
	f.t.Helper()
	tok := f.ctl.Subscribe(filter, 1, func(_ paho.Client, m paho.Message) { h(m) })
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		f.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

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

// bundleOf is one built release of the digits model.
type bundleOf struct {
	counter uint64
	src     string // the folder it was built from
	raw     []byte
	digest  string
	m       *pb.BundleManifest
	path    string // its target path once released
}

// build builds the digits model (controlplane/bundle's testdata) as
// release counter, with change applied to its folder, in 4 KiB chunks.
func (f *fixture) build(counter uint64, change func(dir string)) *bundleOf {
	f.t.Helper()
	dir := filepath.Join(f.t.TempDir(), "digits")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "..", "controlplane", "bundle", "testdata", "digits"))); err != nil {
		f.t.Fatal(err)
	}
	toml := filepath.Join(dir, "bundle.toml")
	b, err := os.ReadFile(toml)
	if err != nil {
		f.t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("release = 1\n"), []byte("release = "+strconv.FormatUint(counter, 10)+"\n"), 1)
	if err := os.WriteFile(toml, b, 0o644); err != nil {
		f.t.Fatal(err)
	}
	if change != nil {
		change(dir)
	}
	raw, digest, err := bundle.Build(dir, bundle.Options{ChunkSize: pb.MinChunkSize, Chunks: f.store})
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.store.PutManifest(raw); err != nil {
		f.t.Fatal(err)
	}
	_, m, err := f.store.Manifest(digest)
	if err != nil {
		f.t.Fatal(err)
	}
	return &bundleOf{counter: counter, src: dir, raw: raw, digest: digest, m: m}
}

// release signs bo into the release repository (two of three targets
// keys) under counter, publishes snapshot and timestamp, and its manifest
// on the retained manifest topic.
func (f *fixture) release(bo *bundleOf, counter uint64) *bundleOf {
	f.t.Helper()
	f.releaseOnly(bo, counter)
	f.publishManifest(bo.digest, bo.raw)
	return bo
}

func (f *fixture) releaseOnly(bo *bundleOf, counter uint64) {
	f.t.Helper()
	bo.path = release.TargetPath(model, counter)
	now := time.Now()
	if _, err := f.repo.AddTarget(bo.path, bo.raw, release.ReleaseCustom{Model: model, ReleaseCounter: counter, Version: "1." + strconv.FormatUint(counter, 10)},
		f.tgtKeys[:2], now, release.DefaultExpiry); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.repo.Publish(f.online, now, release.DefaultExpiry); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) publishManifest(digest string, raw []byte) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := (pahoPublisher{f.ctl}).Publish(ctx, scheme.Bundle(topic.Manifest, digest), 1, true, raw); err != nil {
		f.t.Fatal(err)
	}
}

// assign is the director's metadata naming bo for the device, at a new
// version.
func (f *fixture) assign(bo *bundleOf) map[string][]byte {
	f.t.Helper()
	tf, err := f.repo.Target(bo.path)
	if err != nil {
		f.t.Fatal(err)
	}
	f.dirVer++
	md, err := f.director.Sign(release.Assignment{DeviceID: device, Targets: []*metadata.TargetFiles{tf}, Version: f.dirVer}, time.Now())
	if err != nil {
		f.t.Fatal(err)
	}
	return md
}

// open opens the installer on the fixture's folder; edit adjusts its
// configuration.
func (f *fixture) open(edit func(*install.Config)) *install.Installer {
	f.t.Helper()
	cfg := install.Config{Dir: f.dir, DeviceID: device, ManifestTimeout: 5 * time.Second,
		Fetch: fetch.Options{Quiet: 300 * time.Millisecond, MaxBackoff: time.Second, Stall: 5 * time.Second, Deadline: wait}}
	if edit != nil {
		edit(&cfg)
	}
	in, err := install.Open(context.Background(), cfg)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { in.Close() })
	return in
}

// apply runs one Apply with the current release metadata and dm.
func (f *fixture) apply(ctx context.Context, in *install.Installer, link install.Link, dm map[string][]byte) ([]install.Outcome, error) {
	return in.Apply(ctx, link, f.repo.Metadata(), dm)
}

// states lists the FetchProgress states received for digest, in order.
func (f *fixture) states(digest string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range f.progress {
		if p.GetBundleDigest() == digest && p.GetDeviceId() == device {
			s := strings.ToLower(strings.TrimPrefix(p.GetState().String(), "STATE_"))
			if len(out) == 0 || out[len(out)-1] != s {
				out = append(out, s)
			}
		}
	}
	return out
}

// conn is the device's MQTT connection. Its Link counts every chunk
// payload delivered to the installer and calls onChunk after each.
type conn struct {
	client  paho.Client
	mu      sync.Mutex
	nc      net.Conn
	chunks  atomic.Int64
	onChunk func(n int64)
	// gone is set by cut: what paho had already read off the socket is
	// dropped too, so a cut is a cut however fast the broker was.
	gone atomic.Bool
}

func (f *fixture) connect() *conn {
	f.t.Helper()
	c := &conn{}
	u, _ := url.Parse(f.url)
	o := paho.NewClientOptions().AddBroker(f.url).SetClientID(device).SetUsername(device).SetPassword(devicePassword(device)).
		SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(wait).SetWriteTimeout(wait).SetOrderMatters(false).
		SetCustomOpenConnectionFn(func(*url.URL, paho.ClientOptions) (net.Conn, error) {
			nc, err := net.DialTimeout("tcp", u.Host, wait)
			c.mu.Lock()
			c.nc = nc
			c.mu.Unlock()
			return nc, err
		})
	c.client = paho.NewClient(o)
	if tok := c.client.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		f.t.Fatalf("device connect: %v", tok.Error())
	}
	f.t.Cleanup(func() { c.client.Disconnect(0) })
	return c
}

// cut closes the TCP connection under paho, as a network fault.
func (c *conn) cut() {
	c.gone.Store(true)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nc != nil {
		c.nc.Close()
	}
}

func (c *conn) link() install.Link { return countingLink{c: c, Conn: fetch.Paho(c.client, wait)} }

type countingLink struct {
	c *conn
	fetch.Conn
}

func (l countingLink) Subscribe(ctx context.Context, name string, qos byte, deliver func([]byte)) error {
	k, _, _ := scheme.Parse(name)
	if k != topic.BundleChunks && k != topic.ChunkRepair {
		return l.Conn.Subscribe(ctx, name, qos, deliver)
	}
	return l.Conn.Subscribe(ctx, name, qos, func(b []byte) {
		if l.c.gone.Load() {
			return
		}
		n := l.c.chunks.Add(1)
		deliver(b)
		if l.c.onChunk != nil {
			l.c.onChunk(n)
		}
	})
}

func totalChunks(m *pb.BundleManifest) int {
	n := 0
	for _, f := range m.GetFiles() {
		n += len(f.GetChunks())
	}
	return n
}

// sameFiles checks that every file of bo is in slot with its source's
// bytes.
func sameFiles(t *testing.T, bo *bundleOf, slot string) {
	t.Helper()
	for _, fl := range bo.m.GetFiles() {
		want, err := os.ReadFile(filepath.Join(bo.src, fl.GetPath()))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(slot, fl.GetPath()))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s in %s differs from the source (%v)", fl.GetPath(), slot, err)
		}
	}
}

// snapshot is what a refusal must leave alone: staged.json and the
// models folder (every file's bytes, by path).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if b, err := os.ReadFile(filepath.Join(dir, "staged.json")); err == nil {
		out["staged.json"] = string(b)
	}
	_ = filepath.WalkDir(filepath.Join(dir, "models"), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel+"/"] = ""
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	return out
}

func sameSnapshot(t *testing.T, before, after map[string]string) {
	t.Helper()
	if len(before) != len(after) {
		t.Fatalf("installer folder changed: %d entries, was %d", len(after), len(before))
	}
	for k, v := range before {
		if after[k] != v {
			t.Fatalf("installer folder changed at %s", k)
		}
	}
}
