package broker

import (
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestConnectAuthentication(t *testing.T) {
	e := start(t, nil)
	e.mustDial(t, "dev-a", "dev-a", "secret-a")
	e.service(t)

	for _, tc := range []struct{ name, clientID, user, pass string }{
		{"bad password", "dev-a", "dev-a", "wrong"},
		{"unknown user", "dev-x", "dev-x", "secret-a"},
		{"anonymous", "dev-a", "", ""},
		{"client id is another device", "dev-b", "dev-a", "secret-a"},
		{"empty client id", "", "dev-a", "secret-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := e.dial(t, e.options(tc.clientID, tc.user, tc.pass)); err == nil {
				t.Fatal("connected")
			}
		})
	}
	if s := e.b.Stats(); s.RefusedConnects != 5 || s.Connects != 2 || s.Clients != 2 {
		t.Errorf("stats %+v", s)
	}
}

func TestDeviceCannotPublishElsewhere(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	got, _ := subscribe(t, svc, "dev/#")
	dev := e.mustDial(t, "dev-a", "dev-a", "secret-a")

	// QoS 0 to another device's topic is dropped; the next, allowed
	// message from the same client arrives first.
	publish(t, dev, "dev/dev-b/telemetry", 0, false, "forged")
	publish(t, dev, "$SYS/broker/forged", 0, false, "forged")
	publish(t, dev, "dev/dev-a/telemetry", 1, false, "mine")
	if m := receive(t, got); m.Topic() != "dev/dev-a/telemetry" || string(m.Payload()) != "mine" {
		t.Fatalf("got %s %q", m.Topic(), m.Payload())
	}
	// mochi drops publishes to $SYS before any hook runs: one refusal.
	if s := e.b.Stats(); s.RefusedPublishes != 1 {
		t.Errorf("refused publishes %d, want 1", s.RefusedPublishes)
	}

	// QoS 1 on MQTT 3.1.1 has no negative PUBACK: mochi drops the client.
	lost := make(chan error, 1)
	o := e.options("dev-b", "dev-b", "secret-b").SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	devB, err := e.dial(t, o)
	if err != nil {
		t.Fatal(err)
	}
	devB.Publish("dev/dev-a/telemetry", 1, false, "forged")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("client publishing QoS 1 where it may not was not disconnected")
	}
	publish(t, dev, "dev/dev-a/telemetry", 0, false, "again")
	if m := receive(t, got); string(m.Payload()) != "again" {
		t.Fatalf("forged QoS 1 message delivered: %q", m.Payload())
	}
}

func TestDeviceCannotSubscribeElsewhere(t *testing.T) {
	e := start(t, nil)
	dev := e.mustDial(t, "dev-a", "dev-a", "secret-a")
	if _, code := subscribe(t, dev, "dev/dev-b/#"); code != 0x80 {
		t.Errorf("SUBACK %#x for another device's topics, want 0x80", code)
	}
	if _, code := subscribe(t, dev, "#"); code != 0x80 {
		t.Errorf("SUBACK %#x for #, want 0x80", code)
	}
	own, code := subscribe(t, dev, "dev/dev-a/cmd")
	if code != 1 {
		t.Fatalf("SUBACK %#x for its own topic", code)
	}
	svc := e.service(t)
	publish(t, svc, "dev/dev-b/cmd", 1, false, "not yours")
	publish(t, svc, "dev/dev-a/cmd", 1, false, "yours")
	if m := receive(t, own); string(m.Payload()) != "yours" {
		t.Fatalf("device received %s %q", m.Topic(), m.Payload())
	}
	if s := e.b.Stats(); s.RefusedSubscribes != 2 {
		t.Errorf("refused subscribes %d, want 2", s.RefusedSubscribes)
	}
}

func TestSysTopicsClosedToDevices(t *testing.T) {
	// The broker refuses $SYS to devices even when the Authorizer would
	// allow everything.
	all := start(t, nil)
	all.acl.allowAll = true
	dev := all.mustDial(t, "dev-a", "dev-a", "secret-a")
	for _, f := range []string{"$SYS/#", "$SYS/broker/clients/connected", "$share/g/$SYS/#"} {
		if _, code := subscribe(t, dev, f); code != 0x80 {
			t.Errorf("device SUBACK %#x for %s, want 0x80", code, f)
		}
	}
	svc := all.service(t)
	if _, code := subscribe(t, svc, "$SYS/broker/uptime"); code != 1 {
		t.Errorf("service SUBACK %#x for $SYS", code)
	}
}

func TestSharedSubscriptionAuthorizedOnInnerFilter(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	if _, code := subscribe(t, svc, "$share/ingest/dev/+/telemetry"); code != 1 {
		t.Errorf("SUBACK %#x", code)
	}
	e.acl.mu.Lock()
	asked := slices.Clone(e.acl.asked)
	e.acl.mu.Unlock()
	if !slices.Equal(asked, []string{"dev/+/telemetry"}) {
		t.Errorf("authorizer asked about %q", asked)
	}
}

func TestRetainedForLaterSubscriber(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	publish(t, svc, "dev/dev-a/desired", 1, true, "v7")
	dev := e.mustDial(t, "dev-a", "dev-a", "secret-a")
	got, _ := subscribe(t, dev, "dev/dev-a/desired")
	m := receive(t, got)
	if !m.Retained() || string(m.Payload()) != "v7" {
		t.Fatalf("got retained=%v %q", m.Retained(), m.Payload())
	}
}

func TestDisconnectKicksAndRevokes(t *testing.T) {
	e := start(t, nil)
	lost := make(chan error, 2)
	onLost := func(_ paho.Client, err error) { lost <- err }
	if _, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a").SetConnectionLostHandler(onLost)); err != nil {
		t.Fatal(err)
	}
	bLost := make(chan error, 1)
	devB, err := e.dial(t, e.options("dev-b", "dev-b", "secret-b").
		SetConnectionLostHandler(func(_ paho.Client, err error) { bLost <- err }))
	if err != nil {
		t.Fatal(err)
	}
	svc := e.service(t)
	status, _ := subscribe(t, svc, "dev/+/status")

	e.auth.revoke("dev-a")
	e.b.Disconnect("dev-a")
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("Disconnect did not drop the client")
	}
	if _, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a")); err == nil {
		t.Fatal("revoked device reconnected")
	}
	select {
	case err := <-bLost:
		t.Fatalf("another device was dropped: %v", err)
	default:
	}
	// The client sees the close before the broker has finished removing
	// it, so give the count a moment.
	deadline := time.Now().Add(wait)
	for s := e.b.Stats(); s.Kicked != 1 || s.Clients != 2; s = e.b.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// dev-b is still served.
	publish(t, devB, "dev/dev-b/status", 1, false, "up")
	if m := receive(t, status); string(m.Payload()) != "up" {
		t.Errorf("got %q", m.Payload())
	}
}

func TestDisconnectDropsWill(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	status, _ := subscribe(t, svc, "dev/+/status")
	lost := make(chan error, 1)
	o := e.options("dev-a", "dev-a", "secret-a").SetWill("dev/dev-a/status", "offline", 1, false).
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	if _, err := e.dial(t, o); err != nil {
		t.Fatal(err)
	}
	e.auth.revoke("dev-a")
	e.b.Disconnect("dev-a")
	<-lost
	// A marker from another client, published after the kick: if the will
	// had been sent it would have arrived first.
	publish(t, svc, "dev/dev-b/status", 1, false, "marker")
	if m := receive(t, status); string(m.Payload()) != "marker" {
		t.Fatalf("kicked client's will published: %s %q", m.Topic(), m.Payload())
	}
}

func TestWillFromAbruptClose(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	status, _ := subscribe(t, svc, "dev/+/status")
	raw := make(chan net.Conn, 1)
	o := e.options("dev-a", "dev-a", "secret-a").SetWill("dev/dev-a/status", "offline", 1, false).
		SetCustomOpenConnectionFn(rawDialer(raw))
	if _, err := e.dial(t, o); err != nil {
		t.Fatal(err)
	}
	(<-raw).Close() // no DISCONNECT: the broker must publish the will
	m := receive(t, status)
	if m.Topic() != "dev/dev-a/status" || string(m.Payload()) != "offline" {
		t.Fatalf("got %s %q", m.Topic(), m.Payload())
	}
}

func TestWillTopicMustBePermitted(t *testing.T) {
	e := start(t, nil)
	for _, topic := range []string{"dev/dev-b/status", "$SYS/broker/x", "dev/dev-a/#"} {
		o := e.options("dev-a", "dev-a", "secret-a").SetWill(topic, "offline", 1, true)
		if _, err := e.dial(t, o); err == nil {
			t.Errorf("connected with will topic %s", topic)
		}
	}
	if s := e.b.Stats(); s.RefusedWills != 3 || s.RefusedConnects != 3 {
		t.Errorf("stats %+v", s)
	}
	o := e.options("dev-a", "dev-a", "secret-a").SetWill("dev/dev-a/status", "offline", 1, true)
	if _, err := e.dial(t, o); err != nil {
		t.Errorf("will on its own topic: %v", err)
	}
}

func TestSessionBelongsToItsPrincipal(t *testing.T) {
	e := start(t, nil)
	// The service holds a persistent session under a device's client ID;
	// the device may not take it over (and inherit its subscriptions).
	o := e.options("dev-a", "control", "service-secret").SetCleanSession(false)
	svc, err := e.dial(t, o)
	if err != nil {
		t.Fatal(err)
	}
	subscribe(t, svc, "dev/#")
	if _, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a")); err == nil {
		t.Fatal("device took over another principal's session")
	}
	svc.Disconnect(0)
	if _, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a").SetCleanSession(false)); err == nil {
		t.Fatal("device resumed another principal's stored session")
	}
	// The same principal may take over its own session.
	e.mustDial(t, "dev-b", "dev-b", "secret-b")
	e.mustDial(t, "dev-b", "dev-b", "secret-b")
}

func TestPacketSizeLimit(t *testing.T) {
	e := start(t, nil)
	svc := e.service(t)
	got, _ := subscribe(t, svc, "dev/#")
	lost := make(chan error, 1)
	dev, err := e.dial(t, e.options("dev-a", "dev-a", "secret-a").
		SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err }))
	if err != nil {
		t.Fatal(err)
	}
	chunk := strings.Repeat("c", 256<<10+1024) // a bundle chunk with its envelope
	publish(t, dev, "dev/dev-a/chunk", 1, false, chunk)
	if m := receive(t, got); len(m.Payload()) != len(chunk) {
		t.Fatalf("chunk of %d bytes arrived as %d", len(chunk), len(m.Payload()))
	}
	dev.Publish("dev/dev-a/chunk", 0, false, strings.Repeat("x", DefaultMaxPacketSize))
	select {
	case <-lost:
	case <-time.After(wait):
		t.Fatal("oversized packet did not close the connection")
	}
}

func TestSilentConnectionsAreClosed(t *testing.T) {
	e := start(t, func(c *Config) { c.ConnectTimeout = 200 * time.Millisecond; c.MaxPending = 1 })
	first, err := net.Dial("tcp", e.b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// The only pending slot is taken: the next connection is shed at once.
	second, err := net.Dial("tcp", e.b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(wait))
	if _, err := second.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("second connection: %v, want it closed", err)
	}
	// The silent first one is closed once ConnectTimeout passes.
	_ = first.SetReadDeadline(time.Now().Add(wait))
	if _, err := first.Read(make([]byte, 1)); err != io.EOF && !isReset(err) {
		t.Errorf("silent connection: %v, want it closed", err)
	}
	if s := e.b.Stats(); s.Shed != 1 {
		t.Errorf("shed %d, want 1", s.Shed)
	}
	// The slot is free again.
	e.service(t)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "reset")
}
