package delivery_test

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TestMaliciousRequestsRefused sends, as a real device through each broker,
// requests the Repairer must refuse and count, and one on another device's
// topic that the broker itself must stop. None is answered.
func TestMaliciousRequestsRefused(t *testing.T) {
	for _, start := range []func(testing.TB, []string) brokerEnv{
		func(t testing.TB, _ []string) brokerEnv { return startEmbedded(t) },
		startMosquitto,
	} {
		env := start(t, []string{"mallory", "victim"})
		t.Run(env.name, func(t *testing.T) { refusals(t, env) })
	}
}

func refusals(t *testing.T, env brokerEnv) {
	store := newStore(t)
	digest, m := build(t, store, bundleDir(t, 3, 2))
	cp := startControl(t, env, store, delivery.RepairOptions{MaxRequestBytes: 1 << 20})
	mallory := dial(t, env, "mallory")
	got := make(chan string, 64)
	for _, who := range []string{"mallory", "victim"} {
		tok := mallory.client.Subscribe(scheme.Device(topic.ChunkRepair, who), 0, nil)
		tok.WaitTimeout(wait)
	}
	mallory.client.AddRoute("#", func(_ paho.Client, msg paho.Message) { got <- msg.Topic() })

	blob := len(m.GetFiles()) - 1 // data/blob-02.bin is not last; any file with 4 chunks will do
	for i, f := range m.GetFiles() {
		if len(f.GetChunks()) == 4 {
			blob = i
		}
	}
	cases := []struct {
		name   string
		req    *pb.ChunkRequest
		reason error
	}{
		{"other device's id", &pb.ChunkRequest{DeviceId: "victim", BundleDigest: digest,
			Ranges: []*pb.ChunkRange{{FileIndex: uint32(blob), First: 0, Count: 1}}}, delivery.ErrForeignDevice},
		{"unknown digest", &pb.ChunkRequest{DeviceId: "mallory", BundleDigest: strings.Repeat("ab", 32),
			Ranges: []*pb.ChunkRange{{FileIndex: 0, First: 0, Count: 1}}}, delivery.ErrUnknownBundle},
		{"range past the file", &pb.ChunkRequest{DeviceId: "mallory", BundleDigest: digest,
			Ranges: []*pb.ChunkRange{{FileIndex: uint32(blob), First: 2, Count: 100000}}}, delivery.ErrOutOfRange},
		{"file past the manifest", &pb.ChunkRequest{DeviceId: "mallory", BundleDigest: digest,
			Ranges: []*pb.ChunkRange{{FileIndex: 999, First: 0, Count: 1}}}, delivery.ErrOutOfRange},
		{"over the byte cap", &pb.ChunkRequest{DeviceId: "mallory", BundleDigest: digest,
			Ranges: []*pb.ChunkRange{{FileIndex: uint32(blob), First: 0, Count: 4}, {FileIndex: uint32(blob), First: 0, Count: 4}}}, delivery.ErrTooLarge},
	}
	own := scheme.Device(topic.ChunkRequest, "mallory")
	for _, c := range cases {
		payload, err := wire.Encode(c.req)
		if err != nil {
			t.Fatal(err)
		}
		before := cp.rep.Stats().Refused[c.reason]
		publish(t, mallory, own, payload)
		eventually(t, c.name+" refused", func() bool { return cp.rep.Stats().Refused[c.reason] == before+1 })
	}
	publish(t, mallory, own, []byte("\xff\xff not protobuf"))
	eventually(t, "malformed refused", func() bool { return cp.rep.Stats().Refused[delivery.ErrMalformed] == 1 })

	// On the victim's topic: the broker drops it before the control plane.
	req, _ := wire.Encode(&pb.ChunkRequest{DeviceId: "victim", BundleDigest: digest,
		Ranges: []*pb.ChunkRange{{FileIndex: uint32(blob), First: 0, Count: 1}}})
	before := cp.rep.Stats().Requests
	tok := mallory.client.Publish(scheme.Device(topic.ChunkRequest, "victim"), 1, false, req)
	tok.WaitTimeout(wait)
	if env.embedded != nil {
		// mochi refuses it and, MQTT 3.1.1 having no negative PUBACK,
		// closes the connection; Mosquitto drops it silently.
		eventually(t, "broker refusal", func() bool { return env.embedded.Stats().RefusedPublishes > 0 })
	} else if tok.Error() != nil {
		t.Fatalf("mosquitto: %v", tok.Error())
	}
	time.Sleep(300 * time.Millisecond)
	if n := cp.rep.Stats().Requests; n != before {
		t.Fatalf("a request on another device's topic reached the control plane (%d → %d)", before, n)
	}
	select {
	case tp := <-got:
		t.Fatalf("a refused request was answered on %s", tp)
	default:
	}
	if st := cp.rep.Stats(); st.Chunks != 0 || st.Served != 0 {
		t.Fatalf("refused requests served: %+v", st)
	}
}

func publish(t *testing.T, d *device, tp string, payload []byte) {
	t.Helper()
	if tok := d.client.Publish(tp, 1, false, payload); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish %s: %v", tp, tok.Error())
	}
}

// TestSecondVersionFetchesOnlyChangedFile: v2 differs from v1 in one 1 MiB
// file; a device holding v1 receives only that file's chunks, and a delta
// wave (Except v1) publishes only those.
func TestSecondVersionFetchesOnlyChangedFile(t *testing.T) {
	env := startEmbedded(t)
	store := newStore(t)
	dir := bundleDir(t, 4, 3)
	d1, m1 := build(t, store, dir)
	writeRandom(t, filepath.Join(dir, "data", "blob-01.bin"), 1<<20, mrand.New(mrand.NewPCG(99, 1)))
	d2, m2 := build(t, store, dir)
	cp := startControl(t, env, store, delivery.RepairOptions{})
	dev := dial(t, env, "dev-000")
	cs := openChunks(t, t.TempDir())
	defer cs.Close()
	ctx := context.Background()

	a1 := &account{}
	if err := fetch.Fetch(ctx, dev.conn(), cs, m1, fetchOpts("dev-000", d1, a1, nil)); err != nil {
		t.Fatal(err)
	}
	a1.end()
	changed := cs.Missing(m2)
	var changedBytes int64
	for _, r := range changed {
		changedBytes += int64(r.Length)
	}
	if len(changed) != 4 {
		t.Fatalf("v2 lacks %d chunks after v1, want the 4 of the changed file", len(changed))
	}

	st := cp.wave(t, d2, delivery.WaveOptions{Except: m1})
	if st.Chunks != len(changed) {
		t.Fatalf("delta wave sent %d chunks, want %d", st.Chunks, len(changed))
	}
	a2 := &account{}
	if err := fetch.Fetch(ctx, dev.conn(), cs, m2, fetchOpts("dev-000", d2, a2, nil)); err != nil {
		t.Fatal(err)
	}
	a2.end()
	if limit := changedBytes + int64(len(changed))*chunkOverhead; a2.received > limit {
		t.Fatalf("v2 fetch received %d bytes, want at most %d (the changed file)", a2.received, limit)
	}
	if miss := cs.Missing(m2); len(miss) != 0 {
		t.Fatalf("v2: %d chunks missing", len(miss))
	}
	t.Logf("v1 %d bytes; v2 received %d bytes for %d changed", a1.received, a2.received, changedBytes)
}

// TestTricklingBrokerTripsStallThenResumes: a repair path too slow for the
// device's stall limit ends the fetch with ErrIncomplete; a later fetch
// with a patient limit finishes from where it stopped.
func TestTricklingBrokerTripsStallThenResumes(t *testing.T) {
	env := startEmbedded(t)
	store := newStore(t)
	digest, m := build(t, store, bundleDir(t, 2, 4))
	// 256 KiB/s after a 1 MiB burst: a 256 KiB chunk a second.
	startControl(t, env, store, delivery.RepairOptions{Rate: 256 << 10})
	dev := dial(t, env, "dev-000")
	dir := t.TempDir()
	cs := openChunks(t, dir)
	a := &account{}
	o := fetchOpts("dev-000", digest, a, nil)
	o.Quiet, o.Stall = 100*time.Millisecond, 700*time.Millisecond
	err := fetch.Fetch(context.Background(), dev.conn(), cs, m, o)
	a.end()
	if !errors.Is(err, fetch.ErrIncomplete) || !strings.Contains(err.Error(), "stalled") {
		t.Fatalf("trickle: %v", err)
	}
	have := a.last.BytesHave
	t.Logf("stalled: %v", err)
	cs.Close()

	cs = openChunks(t, dir)
	defer cs.Close()
	if n := len(cs.Missing(m)); n == 0 || n == len(chunkstore.Refs(m)) {
		t.Fatalf("after the stall %d chunks missing: want some, not all", n)
	}
	o.Stall, o.Deadline = 30*time.Second, 2*time.Minute
	b := &account{}
	o.Progress = b.progress
	if err := fetch.Fetch(context.Background(), dev.conn(), cs, m, o); err != nil {
		t.Fatal(err)
	}
	b.end()
	if b.last.BytesHave-have > b.last.BytesTotal || len(cs.Missing(m)) != 0 {
		t.Fatalf("resume: %+v", b.last)
	}
}
