package server_test

import (
	"context"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TestEmbeddedBrokerACL checks the topic table as the embedded broker
// enforces it with the real registry: a device cannot read another
// device's topics, cannot write another device's topics, and cannot write
// its own desired state.
func TestEmbeddedBrokerACL(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	admin := adminClient(t, s, dir)
	ctx := context.Background()
	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "acl", MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	ca, cb := enrol(t, s, tok.Token, "dev-a"), enrol(t, s, tok.Token, "dev-b")
	a, err := connect(t, s, ca, ca.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}
	b, err := connect(t, s, cb, cb.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}
	sc := topic.Default()

	// dev-a may not subscribe to dev-b's desired state or commands, nor to
	// wildcards.
	for _, f := range []string{sc.Device(topic.Desired, "dev-b"), sc.Device(topic.Command, "dev-b"), "flotilla/v1/#", "#", "flotilla/v1/dev/+/desired"} {
		tok := a.client.Subscribe(f, 1, nil)
		if !tok.WaitTimeout(wait) {
			t.Fatalf("subscribe %s timed out", f)
		}
		if st := tok.(*paho.SubscribeToken); st.Result()[f] != 0x80 {
			t.Errorf("dev-a subscribing to %s: return code %#x, want 0x80", f, st.Result()[f])
		}
	}

	// dev-b listens on its own desired topic; dev-a tries to write it and
	// its own; the control plane then writes dev-b's (positive control).
	if tok := b.client.Subscribe(sc.Device(topic.Desired, "dev-b"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	drain(b.msgs) // the retained desired state from enrolment
	forged, _ := wire.Encode(&pb.DesiredState{DeviceId: "dev-b", Revision: 999})
	a.client.Publish(sc.Device(topic.Desired, "dev-b"), 0, false, forged).WaitTimeout(wait)
	own, _ := wire.Encode(&pb.DesiredState{DeviceId: "dev-a", Revision: 999})
	a.client.Publish(sc.Device(topic.Desired, "dev-a"), 0, true, own).WaitTimeout(wait)
	if _, err := admin.Label(ctx, "dev-b", map[string]string{"x": "1"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-b.msgs:
		var ds pb.DesiredState
		if err := wire.DecodeTopic(topic.Desired, m.Payload(), &ds); err != nil || ds.GetRevision() == 999 || ds.GetHints().GetLabels()["x"] != "1" {
			t.Fatalf("dev-b got a desired state it should not have: %v, %v", &ds, err)
		}
	case <-time.After(wait):
		t.Fatal("the control plane's desired state did not arrive")
	}
	// dev-a's own desired topic still holds what the control plane wrote,
	// not its forgery.
	drain(a.msgs)
	if tok := a.client.Subscribe(sc.Device(topic.Desired, "dev-a"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-a.msgs:
		var ds pb.DesiredState
		if err := wire.DecodeTopic(topic.Desired, m.Payload(), &ds); err != nil || ds.GetRevision() == 999 {
			t.Fatalf("dev-a's retained desired state is its own forgery: %v, %v", &ds, err)
		}
	case <-time.After(wait):
		t.Fatal("no retained desired state for dev-a")
	}
}

func drain(ch chan paho.Message) {
	for {
		select {
		case <-ch:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}
