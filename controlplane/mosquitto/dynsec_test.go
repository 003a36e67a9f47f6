package mosquitto_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

func TestProvisionAuthenticates(t *testing.T) {
	f := newFixture(t)
	if err := f.ds.Provision(ctx(t), "d1", "s1"); err != nil {
		t.Fatal(err)
	}
	f.b.MustDial("d1", "s1", nil)
	for _, c := range []struct{ user, pw string }{{"d1", "wrong"}, {"d1", ""}, {"d2", "s1"}} {
		if _, err := f.b.Dial(c.user, c.pw, nil); err == nil {
			t.Errorf("%s with password %q connected", c.user, c.pw)
		}
	}
}

// TestDevicePublishACL: a device publishes on its own device-to-cloud topics
// only. Mosquitto drops a denied PUBLISH from a 3.1.1 client silently, so
// non-delivery is checked after a positive control sent later on the same
// connection has arrived.
func TestDevicePublishACL(t *testing.T) {
	f := newFixture(t)
	for _, d := range []string{"d1", "d2"} {
		if err := f.ds.Provision(ctx(t), d, d+"-secret"); err != nil {
			t.Fatal(err)
		}
	}
	in := f.svcIn
	if code := subscribe(t, f.svc, scheme.Prefix()+"/#"); code != 1 {
		t.Fatalf("service subscribe: code %#x", code)
	}
	// A second replica sharing the ingest through a shared subscription.
	replica, shared := dial(t, f.b, cpUser, cpPassword, nil)
	if code := subscribe(t, replica, topic.Shared("cp", scheme.AllDevices(topic.Birth))); code != 1 {
		t.Fatalf("service shared subscribe: code %#x", code)
	}
	lost := make(chan error, 1)
	d1 := f.b.MustDial("d1", "d1-secret", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})

	own := scheme.Device(topic.Birth, "d1")
	publish(t, d1, own, false, "hello")
	in.expect(t, own, "hello")
	shared.expect(t, own, "hello")

	for _, denied := range []string{
		scheme.Device(topic.Birth, "d2"),   // another device's topic
		scheme.Device(topic.Desired, "d1"), // its own, written by the control plane only
		scheme.Device(topic.Command, "d1"), // ditto
		scheme.Bundle(topic.BundleChunks, "b1"),
		scheme.Fleet(topic.ReleaseMeta),
		"elsewhere/topic",
	} {
		publish(t, d1, denied, false, "forged") // QoS 1: still acknowledged
	}
	publish(t, d1, scheme.Device(topic.Telemetry, "d1"), false, "control")
	in.expect(t, scheme.Device(topic.Telemetry, "d1"), "control")
	in.none(t)
	select {
	case err := <-lost:
		t.Fatalf("denied publishes cut the connection: %v", err)
	default:
	}
}

// TestDeviceSubscribeACL: a device reads its own cloud-to-device topics and
// the fleet's, never another device's, not even a retained message.
func TestDeviceSubscribeACL(t *testing.T) {
	f := newFixture(t)
	if err := f.ds.Provision(ctx(t), "d1", "s1"); err != nil {
		t.Fatal(err)
	}
	publish(t, f.svc, scheme.Device(topic.Desired, "d1"), true, "desired-d1")
	publish(t, f.svc, scheme.Device(topic.Desired, "d2"), true, "desired-d2")
	d1, in := dial(t, f.b, "d1", "s1", nil)
	for _, filter := range []string{
		scheme.Device(topic.Desired, "d2"),
		scheme.AllDevices(topic.Desired),
		scheme.Prefix() + "/#",
		"#",
		scheme.Device(topic.Birth, "d1"), // its own, but device-to-cloud
		scheme.Prefix() + "/bundle/+/chunks",
		scheme.Prefix() + "/bundle/#",
	} {
		if code := subscribe(t, d1, filter); code != 0x80 {
			t.Errorf("subscribe %s: code %#x, want 0x80 (refused)", filter, code)
		}
	}
	own := scheme.Device(topic.Desired, "d1")
	if code := subscribe(t, d1, own); code != 1 {
		t.Fatalf("subscribe %s: code %#x", own, code)
	}
	in.expect(t, own, "desired-d1") // retained
	chunks := scheme.Bundle(topic.BundleChunks, "b1")
	if code := subscribe(t, d1, chunks); code != 1 {
		t.Fatalf("subscribe %s: code %#x", chunks, code)
	}
	publish(t, f.svc, scheme.Device(topic.Desired, "d2"), true, "desired-d2-v2")
	publish(t, f.svc, chunks, false, "chunk")
	in.expect(t, chunks, "chunk")
	in.none(t)
}

func TestRevokeDisconnectsAtOnce(t *testing.T) {
	f := newFixture(t)
	if err := f.ds.Provision(ctx(t), "d1", "s1"); err != nil {
		t.Fatal(err)
	}
	lost := make(chan error, 1)
	f.b.MustDial("d1", "s1", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	start := time.Now()
	if err := f.ds.Revoke(ctx(t), "d1"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-lost:
		t.Logf("d1 disconnected %v after Revoke was called: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Fatal("revoked device still connected after 5s")
	}
	if _, err := f.b.Dial("d1", "s1", nil); err == nil {
		t.Fatal("revoked device reconnected")
	}
	if err := f.ds.Revoke(ctx(t), "d1"); err != nil {
		t.Fatalf("revoke again: %v", err)
	}
	if err := f.ds.Revoke(ctx(t), "never-enrolled"); err != nil {
		t.Fatalf("revoke unknown: %v", err)
	}
	data, err := f.ds.Exec(ctx(t), "listRoles", map[string]any{"count": -1})
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); strings.Contains(s, mosquitto.DeviceRolePrefix+"d1") {
		t.Errorf("role left behind: %s", s)
	}
}

// TestProvisionReplaces: provisioning again replaces the password and is
// otherwise a no-op; the admin and the control user are never taken over.
func TestProvisionReplaces(t *testing.T) {
	f := newFixture(t)
	for range 2 {
		if err := f.ds.Provision(ctx(t), "d1", "old"); err != nil {
			t.Fatal(err)
		}
	}
	lost := make(chan error, 1)
	f.b.MustDial("d1", "old", func(o *mqtt.ClientOptions) {
		o.SetConnectionLostHandler(func(_ mqtt.Client, err error) { lost <- err })
	})
	if err := f.ds.Provision(ctx(t), "d1", "new"); err != nil {
		t.Fatal(err)
	}
	select { // mosquitto 2.0.11 kicks a client's sessions on modifyClient
	case <-lost:
	case <-time.After(5 * time.Second):
		t.Error("session with the old password survived re-provisioning")
	}
	if _, err := f.b.Dial("d1", "old", nil); err == nil {
		t.Error("old password still accepted")
	}
	d1 := f.b.MustDial("d1", "new", nil)
	in := f.svcIn
	subscribe(t, f.svc, scheme.AllDevices(topic.Birth))
	publish(t, d1, scheme.Device(topic.Birth, "d1"), false, "again")
	in.expect(t, scheme.Device(topic.Birth, "d1"), "again")

	for _, id := range []string{f.b.AdminUser, cpUser} {
		if err := f.ds.Provision(ctx(t), id, "x"); !errors.Is(err, mosquitto.ErrNotOurs) {
			t.Errorf("provision %s: %v, want ErrNotOurs", id, err)
		}
		if err := f.ds.Revoke(ctx(t), id); !errors.Is(err, mosquitto.ErrNotOurs) {
			t.Errorf("revoke %s: %v, want ErrNotOurs", id, err)
		}
	}
	f.b.MustDial(cpUser, cpPassword, nil)
	if err := f.ds.Provision(ctx(t), "Bad/ID", "x"); !errors.Is(err, topic.ErrInvalidID) {
		t.Errorf("provision Bad/ID: %v", err)
	}
}

func TestEnsureBaselineAndErrors(t *testing.T) {
	f := newFixture(t)
	for range 2 {
		if err := f.ds.EnsureBaseline(ctx(t)); err != nil {
			t.Fatal(err)
		}
	}
	data, err := f.ds.Exec(ctx(t), "getDefaultACLAccess", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		ACLs []struct {
			ACLType string `json:"acltype"`
			Allow   bool   `json:"allow"`
		} `json:"acls"`
	}
	if err := json.Unmarshal(data, &got); err != nil || len(got.ACLs) != 4 {
		t.Fatalf("getDefaultACLAccess: %s (%v)", data, err)
	}
	for _, a := range got.ACLs {
		if a.Allow != mosquitto.Baseline[a.ACLType] {
			t.Errorf("%s allow=%v", a.ACLType, a.Allow)
		}
	}

	_, err = f.ds.Exec(ctx(t), "noSuchCommand", nil)
	var ce *mosquitto.CommandError
	if !errors.As(err, &ce) || ce.Message != "Unknown command" {
		t.Errorf("unknown command: %v", err)
	}

	// A client that is not the admin cannot even subscribe to responses.
	if _, err := mosquitto.NewDynsec(ctx(t), f.svc, scheme); err == nil {
		t.Error("NewDynsec as a non-admin succeeded")
	}
}

// TestConcurrentProvision runs many calls at once over one Dynsec; every
// response must reach its own caller (run with -race).
func TestConcurrentProvision(t *testing.T) {
	f := newFixture(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("dev-%03d", i)
			if err := f.ds.Provision(ctx(t), id, "pw-"+id); err != nil {
				errs <- err
			}
			if i%2 == 0 {
				if err := f.ds.Revoke(ctx(t), id); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, i := range []int{0, 1, n - 1} {
		id := fmt.Sprintf("dev-%03d", i)
		_, err := f.b.Dial(id, "pw-"+id, nil)
		if revoked := i%2 == 0; revoked != (err != nil) {
			t.Errorf("%s: revoked=%v, connect error %v", id, revoked, err)
		}
	}
}

// TestBrokerRestart: devices and retained desired state survive a restart,
// and the admin's Dynsec keeps working once its client has reconnected.
func TestBrokerRestart(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{Persistence: true})
	var ds *mosquitto.Dynsec
	var mu sync.Mutex
	reconnected := make(chan struct{}, 4)
	admin := b.MustDial(b.AdminUser, b.AdminPassword, func(o *mqtt.ClientOptions) {
		o.SetAutoReconnect(true).SetMaxReconnectInterval(200 * time.Millisecond)
		o.SetOnConnectHandler(func(mqtt.Client) {
			mu.Lock()
			d := ds
			mu.Unlock()
			if d != nil {
				c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_ = d.Resubscribe(c)
				cancel()
				reconnected <- struct{}{}
			}
		})
	})
	d, err := mosquitto.NewDynsec(ctx(t), admin, scheme)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	ds = d
	mu.Unlock()
	for _, step := range []error{
		ds.EnsureBaseline(ctx(t)),
		ds.ProvisionControl(ctx(t), cpUser, cpPassword),
		ds.Provision(ctx(t), "d1", "s1"),
	} {
		if step != nil {
			t.Fatal(step)
		}
	}
	svc := b.MustDial(cpUser, cpPassword, nil)
	publish(t, svc, scheme.Device(topic.Desired, "d1"), true, "v1")

	b.Restart()
	select {
	case <-reconnected:
	case <-time.After(10 * time.Second):
		t.Fatal("admin did not reconnect")
	}
	if err := ds.Provision(ctx(t), "d2", "s2"); err != nil {
		t.Fatal(err)
	}
	c1, in1 := dial(t, b, "d1", "s1", nil)
	subscribe(t, c1, scheme.Device(topic.Desired, "d1"))
	in1.expect(t, scheme.Device(topic.Desired, "d1"), "v1")
	c2, in2 := dial(t, b, "d2", "s2", nil)
	subscribe(t, c2, scheme.Device(topic.Desired, "d2"))
	in2.none(t)
}
