package broker

import (
	"net"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestServerOptions(t *testing.T) {
	o := serverOptions(Config{MaxPacketSize: 1000, MaxClients: 7, SessionExpiry: time.Hour}, nil)
	c := o.Capabilities
	if c.MaximumMessageExpiryInterval != 0 {
		t.Error("mochi would delete retained messages after a day")
	}
	if c.TopicAliasMaximum != 0 {
		t.Error("inbound topic aliases are on")
	}
	if c.MaximumPacketSize != 1000 || c.MaximumClients != 7 || c.MaximumSessionExpiryInterval != 3600 {
		t.Errorf("capabilities %+v", c)
	}
}

func TestNewRefusesMissingPolicy(t *testing.T) {
	if _, err := New(Config{Addr: "127.0.0.1:0", ACL: &fakeACL{}}); err == nil {
		t.Error("no authenticator accepted")
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Auth: newFakeAuth()}); err == nil {
		t.Error("no authorizer accepted")
	}
}

// A Disconnect that runs while a connection is authenticating makes its
// bind fail, so the connection asks the Authenticator again.
func TestTrackerBindAfterTakeFails(t *testing.T) {
	tr := newTracker()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := &conn{Conn: a}
	tr.add(c)
	gen := tr.generation()
	tr.take("dev-a")
	if tr.bind(c, Principal{Kind: Device, ID: "dev-a"}, nil, gen) {
		t.Fatal("bound across a Disconnect")
	}
	if !tr.bind(c, Principal{Kind: Device, ID: "dev-a"}, nil, tr.generation()) {
		t.Fatal("bind failed")
	}
	if got := tr.take("dev-a"); len(got) != 1 || got[0] != c {
		t.Fatalf("take returned %v", got)
	}
	tr.remove(c)
	if len(tr.all) != 0 || len(tr.byID) != 0 {
		t.Error("tracker keeps a removed connection")
	}
}

func TestStartTwiceAndCloseTwice(t *testing.T) {
	e := start(t, nil)
	if err := e.b.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", e.b.Addr().String(), time.Second); err == nil {
		t.Error("still listening after Close")
	}
}

func TestCloseDropsEverything(t *testing.T) {
	e := start(t, nil)
	lost := make(chan error, 1)
	o := e.options("dev-a", "dev-a", "secret-a").SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	if _, err := e.dial(t, o); err != nil {
		t.Fatal(err)
	}
	silent, err := net.Dial("tcp", e.b.Addr().String()) // pending for ConnectTimeout (10 s)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	done := make(chan error, 1)
	go func() { done <- e.b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close waited for a silent connection")
	}
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("client not dropped by Close")
	}
}
