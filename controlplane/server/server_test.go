package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

const wait = 10 * time.Second

func startServer(t *testing.T, dir string) *server.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	s, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func adminClient(t *testing.T, s *server.Server, dir string) *apiclient.Client {
	t.Helper()
	tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.PinnedClientTLS(s.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	return apiclient.New(s.APIURL(), strings.TrimSpace(string(tok)), &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}})
}

// enrol enrols a device over HTTPS the way an agent does, by hand.
func enrol(t *testing.T, s *server.Server, token, id string) *pb.EnrolResponse {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(nil)
	return enrolWithKey(t, s, token, id, priv)
}

func enrolWithKey(t *testing.T, s *server.Server, token, id string, priv ed25519.PrivateKey) *pb.EnrolResponse {
	t.Helper()
	pub := priv.Public().(ed25519.PublicKey)
	req := &pb.EnrolRequest{Token: token, DeviceId: id, PublicKey: pub}
	req.Signature = ed25519.Sign(priv, pb.EnrolProof(id, pub, token))
	body, _ := protojson.Marshal(req)
	tlsCfg, _ := pki.ClientTLS(s.CAPEM(), "")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := hc.Post(s.APIURL()+"/v1/enrol", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("enrol %s: %d %s", id, resp.StatusCode, buf.String())
	}
	var out pb.EnrolResponse
	if err := protojson.Unmarshal(buf.Bytes(), &out); err != nil {
		t.Fatal(err)
	}
	return &out
}

type device struct {
	id     string
	client paho.Client
	msgs   chan paho.Message
	lost   chan error
}

func connect(t *testing.T, s *server.Server, creds *pb.EnrolResponse, password string) (*device, error) {
	t.Helper()
	return connectURL(t, "ssl://"+s.BrokerAddr().String(), creds, password)
}

func connectURL(t *testing.T, url string, creds *pb.EnrolResponse, password string) (*device, error) {
	t.Helper()
	pool, _ := pki.ClientTLS(creds.GetCaPem(), "")
	d := &device{id: creds.GetDeviceId(), msgs: make(chan paho.Message, 100), lost: make(chan error, 1)}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(d.id).
		SetUsername(creds.GetMqttUsername()).SetPassword(password).SetTLSConfig(pool).
		SetAutoReconnect(false).SetConnectTimeout(wait).
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) { d.msgs <- m }).
		SetConnectionLostHandler(func(_ paho.Client, err error) { d.lost <- err })
	d.client = paho.NewClient(o)
	tok := d.client.Connect()
	tok.WaitTimeout(wait)
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { d.client.Disconnect(0) })
	return d, nil
}

func publishProto(t *testing.T, d *device, k topic.Kind, b []byte) {
	t.Helper()
	e := topic.MustLookup(k)
	tok := d.client.Publish(topic.Default().Device(k, d.id), e.QoS, e.Retained, b)
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", k, tok.Error())
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDeviceLifecycle runs one device through the control plane by hand:
// enrol, connect, desired state, birth, online, label, forged and malformed
// messages, decommission, and a refused reconnect.
func TestDeviceLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	ctx := context.Background()
	admin := adminClient(t, s, dir)
	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "line 1", MaxUses: 2, Labels: map[string]string{"site": "lab"}})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, s, tok.Token, "dev-1")
	if creds.GetMqttUsername() != "dev-1" || len(creds.GetMqttPassword()) < 40 || !bytes.Equal(creds.GetCaPem(), s.CAPEM()) {
		t.Fatalf("credentials %v", creds)
	}
	if _, err := connect(t, s, creds, "wrong"); err == nil {
		t.Fatal("connected with a wrong password")
	}
	d, err := connect(t, s, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatal(err)
	}
	if tok := d.client.Subscribe(topic.Default().Device(topic.Desired, "dev-1"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	// The retained desired state from enrolment arrives, with the token's labels.
	var desired pb.DesiredState
	select {
	case m := <-d.msgs:
		if err := wire.DecodeTopic(topic.Desired, m.Payload(), &desired); err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("no desired state")
	}
	if desired.GetRevision() < 1 || desired.GetHints().GetLabels()["site"] != "lab" {
		t.Fatalf("desired %v", &desired)
	}

	birth, _ := wire.Encode(&pb.Birth{DeviceId: "dev-1", AgentVersion: "9.9", ProtocolVersion: wire.ProtocolVersion, Facts: &pb.Facts{Os: "linux", Arch: "arm64"}})
	publishProto(t, d, topic.Birth, birth)
	online, _ := wire.Encode(&pb.Status{DeviceId: "dev-1", State: pb.Status_STATE_ONLINE})
	publishProto(t, d, topic.Status, online)
	eventually(t, "device online with its birth", func() bool {
		v, err := admin.Device(ctx, "dev-1")
		return err == nil && v.Online && v.AgentVersion == "9.9" && strings.Contains(string(v.Facts), "arm64")
	})

	// A label change publishes a newer desired state.
	if _, err := admin.Label(ctx, "dev-1", map[string]string{"ring": "canary"}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-d.msgs:
		var next pb.DesiredState
		if err := wire.DecodeTopic(topic.Desired, m.Payload(), &next); err != nil || next.GetRevision() <= desired.GetRevision() || next.GetHints().GetLabels()["ring"] != "canary" {
			t.Fatalf("after label: %v, %v", &next, err)
		}
	case <-time.After(wait):
		t.Fatal("no desired state after labelling")
	}

	// A birth claiming another device, on our topic, changes nothing.
	forged, _ := wire.Encode(&pb.Birth{DeviceId: "dev-2", AgentVersion: "evil", ProtocolVersion: 1})
	publishProto(t, d, topic.Birth, forged)
	publishProto(t, d, topic.Birth, []byte{0xff, 0x01})
	publishProto(t, d, topic.Birth, birth) // a positive control after the bad ones
	eventually(t, "bad births counted", func() bool {
		return strings.Contains(s.Metrics().String(), `"dropped_malformed": 2`)
	})
	if v, _ := admin.Device(ctx, "dev-1"); v.AgentVersion != "9.9" {
		t.Fatalf("forged birth applied: %q", v.AgentVersion)
	}

	// Decommission drops the live connection and the credentials.
	if _, err := admin.Decommission(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.lost:
	case <-time.After(wait):
		t.Fatal("decommissioned device still connected")
	}
	if _, err := connect(t, s, creds, creds.GetMqttPassword()); err == nil {
		t.Fatal("decommissioned device reconnected")
	}
	// Its ID is never reused, even with a fresh key and a valid token.
	if _, err := admin.Device(ctx, "dev-1"); err != nil {
		t.Fatal(err)
	}
	list, _ := admin.ListDevices(ctx, apiclient.ListOptions{})
	if len(list) != 0 {
		t.Fatalf("decommissioned device listed by default: %v", list)
	}
}

// TestRestartKeepsState: devices, tokens and the CA survive a restart, and
// desired revisions keep growing.
func TestRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	ctx := context.Background()
	admin := adminClient(t, s, dir)
	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "bulk", MaxUses: 0})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, s, tok.Token, "dev-r")
	fp := s.CAFingerprint()
	if _, err := admin.Label(ctx, "dev-r", map[string]string{"a": "1"}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2 := startServer(t, dir)
	if s2.CAFingerprint() != fp {
		t.Fatal("CA changed across restart")
	}
	if s2.AdminToken() != "" {
		t.Fatal("a second admin token was made on restart")
	}
	admin2 := adminClient(t, s2, dir)
	if v, err := admin2.Device(ctx, "dev-r"); err != nil || v.Labels["a"] != "1" {
		t.Fatalf("device after restart: %+v, %v", v, err)
	}
	d, err := connect(t, s2, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatalf("enrolled device cannot connect after restart: %v", err)
	}
	// The embedded broker lost its retained messages with the process; the
	// desired state is restored, with a higher revision than before.
	if tok := d.client.Subscribe(topic.Default().Device(topic.Desired, "dev-r"), 1, nil); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	select {
	case m := <-d.msgs:
		var ds pb.DesiredState
		if err := wire.DecodeTopic(topic.Desired, m.Payload(), &ds); err != nil || ds.GetRevision() < 3 || ds.GetHints().GetLabels()["a"] != "1" {
			t.Fatalf("desired after restart: %v, %v", &ds, err)
		}
	case <-time.After(wait):
		t.Fatal("no retained desired state after restart")
	}
	// Re-enrolling with the same token and a new key is a conflict.
	pub, priv, _ := ed25519.GenerateKey(nil)
	req := &pb.EnrolRequest{Token: tok.Token, DeviceId: "dev-r", PublicKey: pub}
	req.Signature = ed25519.Sign(priv, pb.EnrolProof("dev-r", pub, tok.Token))
	body, _ := protojson.Marshal(req)
	tlsCfg, _ := pki.ClientTLS(s2.CAPEM(), "")
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	resp, err := hc.Post(s2.APIURL()+"/v1/enrol", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("enrol with another key: %d, want 409", resp.StatusCode)
	}
}

// TestReEnrolAfterLostAnswer: a device that lost its enrolment answer enrols
// again with the same key and token, without using the token again, and
// only the newest secret works.
func TestReEnrolAfterLostAnswer(t *testing.T) {
	dir := t.TempDir()
	s := startServer(t, dir)
	ctx := context.Background()
	admin := adminClient(t, s, dir)
	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "one", MaxUses: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, priv, _ := ed25519.GenerateKey(nil)
	first := enrolWithKey(t, s, tok.Token, "dev-x", priv)
	second := enrolWithKey(t, s, tok.Token, "dev-x", priv)
	if first.GetMqttPassword() == second.GetMqttPassword() {
		t.Fatal("re-enrolment kept the secret")
	}
	if _, err := connect(t, s, first, first.GetMqttPassword()); err == nil {
		t.Fatal("the superseded secret still works")
	}
	if _, err := connect(t, s, second, second.GetMqttPassword()); err != nil {
		t.Fatalf("the new secret: %v", err)
	}
	toks, _ := admin.ListEnrolTokens(ctx)
	if len(toks) != 1 || toks[0].Uses != 1 {
		t.Fatalf("token uses after re-enrolment: %+v", toks)
	}
}
