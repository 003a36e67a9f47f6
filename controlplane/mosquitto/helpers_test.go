package mosquitto_test

import (
	"context"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// The control-plane service user the tests create.
const (
	cpUser     = "cp"
	cpPassword = "cp-secret"
)

// quiet is how long a test waits for a message that must not come, after a
// positive control has already arrived on the same path.
const quiet = 300 * time.Millisecond

var scheme = topic.Default()

// fixture is a dynamic-security broker with an admin and a control-plane
// service user.
type fixture struct {
	b     *mosquittotest.Broker
	ds    *mosquitto.Dynsec
	svc   mqtt.Client
	svcIn inbox
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	b := mosquittotest.Start(t, mosquittotest.Options{})
	admin := b.MustDial(b.AdminUser, b.AdminPassword, nil)
	ds, err := mosquitto.NewDynsec(ctx(t), admin, scheme)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.EnsureBaseline(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := ds.ProvisionControl(ctx(t), cpUser, cpPassword); err != nil {
		t.Fatal(err)
	}
	svc, in := dial(t, b, cpUser, cpPassword, nil)
	return &fixture{b: b, ds: ds, svc: svc, svcIn: in}
}

// dial connects user and returns the client with the inbox that gets every
// message the broker delivers to it, exactly once: subscriptions are made
// without a callback, because paho would call each matching route's.
func dial(t testing.TB, b *mosquittotest.Broker, user, password string, configure func(*mqtt.ClientOptions)) (mqtt.Client, inbox) {
	t.Helper()
	in := newInbox()
	c := b.MustDial(user, password, func(o *mqtt.ClientOptions) {
		o.SetDefaultPublishHandler(in.handler)
		if configure != nil {
			configure(o)
		}
	})
	return c, in
}

// ctx is a context bounded by 10 s and the test.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// inbox collects messages from subscriptions.
type inbox chan mqtt.Message

func newInbox() inbox { return make(inbox, 64) }

func (in inbox) handler(_ mqtt.Client, m mqtt.Message) { in <- m }

// subscribe subscribes c to filter and returns the SUBACK code.
func subscribe(t testing.TB, c mqtt.Client, filter string) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, nil)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	res := tok.(*mqtt.SubscribeToken).Result() // keyed without "$share/group/"
	if len(res) != 1 {
		t.Fatalf("subscribe %s: results %v", filter, res)
	}
	for _, code := range res {
		return code
	}
	return 0
}

func publish(t testing.TB, c mqtt.Client, topic string, retained bool, payload string) {
	t.Helper()
	tok := c.Publish(topic, 1, retained, payload)
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// expect waits for the next message and checks its topic and payload.
func (in inbox) expect(t testing.TB, topic, payload string) {
	t.Helper()
	select {
	case m := <-in:
		if m.Topic() != topic || string(m.Payload()) != payload {
			t.Fatalf("got %q on %s, want %q on %s", m.Payload(), m.Topic(), payload, topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no message %q on %s", payload, topic)
	}
}

// none checks nothing more arrives within quiet.
func (in inbox) none(t testing.TB) {
	t.Helper()
	select {
	case m := <-in:
		t.Fatalf("unexpected message %q on %s", m.Payload(), m.Topic())
	case <-time.After(quiet):
	}
}
