package server_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func secret() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TestExternalMosquitto runs the control plane on a private Mosquitto with
// dynamic security: enrolment provisions the device in the broker, the
// device's messages reach the registry through the broker, another
// device's topics are closed to it, and decommissioning kicks it at once.
func TestExternalMosquitto(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{AdminUser: "dynsec-admin", AdminPassword: secret()})
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := server.New(ctx, server.Config{
		DataDir: dir, Listen: "127.0.0.1:0", MQTTURL: b.URL(),
		MQTTUser: "flotilla-control", MQTTPassword: secret(),
		Dynsec: &server.Dynsec{AdminUser: b.AdminUser, AdminPassword: b.AdminPassword},
	})
	if err != nil {
		t.Fatalf("%v\nbroker log:\n%s", err, b.Log())
	}
	defer s.Close()
	if s.BrokerAddr() != nil {
		t.Fatal("the embedded broker runs beside an external one")
	}
	admin := adminClient(t, s, dir)
	bg := context.Background()
	tok, err := admin.CreateEnrolToken(bg, api.EnrolTokenRequest{Name: "m", MaxUses: 2})
	if err != nil {
		t.Fatal(err)
	}
	c1 := enrol(t, s, tok.Token, "dev-m1")
	c2 := enrol(t, s, tok.Token, "dev-m2")
	if c1.GetMqttUrl() != b.URL() {
		t.Fatalf("device told %q, want the external broker %q", c1.GetMqttUrl(), b.URL())
	}
	d1, err := connectURL(t, b.URL(), c1, c1.GetMqttPassword())
	if err != nil {
		t.Fatalf("enrolled device refused by mosquitto: %v", err)
	}
	if _, err := connectURL(t, b.URL(), c2, c1.GetMqttPassword()); err == nil {
		t.Fatal("dev-m2 connected with dev-m1's password")
	}
	// dev-m1 pretends to be dev-m2: mosquitto drops it, so dev-m2 never
	// comes online; its own status does bring it online.
	fake, _ := wire.Encode(&pb.Status{DeviceId: "dev-m2", State: pb.Status_STATE_ONLINE})
	if tok := d1.client.Publish(topic.Default().Device(topic.Status, "dev-m2"), 1, true, fake); !tok.WaitTimeout(wait) {
		t.Fatal("publish timed out")
	}
	online, _ := wire.Encode(&pb.Status{DeviceId: "dev-m1", State: pb.Status_STATE_ONLINE})
	publishProto(t, d1, topic.Status, online)
	eventually(t, "dev-m1 online through mosquitto", func() bool {
		v, err := admin.Device(bg, "dev-m1")
		return err == nil && v.Online
	})
	if v, _ := admin.Device(bg, "dev-m2"); v.Online {
		t.Fatal("dev-m1 set dev-m2's status through mosquitto")
	}
	// A ping goes out through mosquitto and the answer comes back.
	go func() {
		for m := range d1.msgs {
			var cmd pb.Command
			if wire.DecodeTopic(topic.Command, m.Payload(), &cmd) == nil {
				res, _ := wire.Encode(&pb.CommandResult{CommandId: cmd.GetId(), DeviceId: "dev-m1", Ok: true})
				d1.client.Publish(topic.Default().Device(topic.CommandResult, "dev-m1"), 1, false, res)
			}
		}
	}()
	if tok := d1.client.Subscribe(topic.Default().Device(topic.Command, "dev-m1"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if r, err := admin.Command(bg, "dev-m1", "ping", "5s"); err != nil || !r.OK {
		t.Fatalf("ping through mosquitto: %+v, %v", r, err)
	}
	if _, err := admin.Decommission(bg, "dev-m1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d1.lost:
	case <-ctx.Done():
		t.Fatal("decommissioned device still connected to mosquitto")
	}
	if _, err := connectURL(t, b.URL(), c1, c1.GetMqttPassword()); err == nil || !strings.Contains(err.Error(), "not Authorized") && !strings.Contains(err.Error(), "bad user name or password") {
		t.Fatalf("decommissioned device reconnect: %v", err)
	}
}
