package agent

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func TestDesiredState(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	r := start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	desiredTopic := srv.Scheme().Device(topic.Desired, "dev-1")

	srv.PublishDesired(&flotillapb.DesiredState{DeviceId: "dev-1", Revision: 5})
	rep := agenttest.WaitFor[flotillapb.ReportedState](srv, 0, "dev-1", topic.Reported, nil)
	if rep.GetDesiredRevision() != 5 || rep.GetAgentVersion() != "1.2.3-test" {
		t.Errorf("reported = %v", rep)
	}
	if got := r.Status().DesiredRevision; got != 5 {
		t.Errorf("status revision %d, want 5", got)
	}

	// A stale revision is counted and ignored.
	srv.PublishDesired(&flotillapb.DesiredState{DeviceId: "dev-1", Revision: 3})
	eventually(t, "stale counted", func() bool { return r.Status().Counters[CounterDesiredStale] == 1 })

	// Hostile messages are counted and dropped.
	other, _ := wire.Encode(&flotillapb.DesiredState{DeviceId: "dev-2", Revision: 9})
	bad := [][]byte{
		{0xff, 0xff, 0xff},                    // malformed
		other,                                 // another device's
		bytes.Repeat([]byte{0x0a}, (1<<20)+1), // over the topic's limit
		protowire.AppendTag(nil, 2, protowire.BytesType), // revision with the wrong wire type
	}
	for _, b := range bad {
		srv.Publish(desiredTopic, b, false)
	}
	eventually(t, "malformed counted", func() bool { return r.Status().Counters[CounterMalformed] == int64(len(bad)) })
	if got := r.Status(); got.DesiredRevision != 5 || got.Counters[CounterDesiredAccepted] != 1 || got.State != StateConnected {
		t.Errorf("status after hostile messages = %+v", got)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	db, err := state.Open(context.Background(), cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rev, raw, err := db.Desired(context.Background())
	var ds flotillapb.DesiredState
	if err != nil || rev != 5 || wire.DecodeTopic(topic.Desired, raw, &ds) != nil || ds.GetRevision() != 5 {
		t.Errorf("stored desired = %d, %v", rev, err)
	}
}

func TestCommands(t *testing.T) {
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg := testConfig(t, srv, "dev-1")
	cfg.Clock = clock
	r := start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	now := clock.Now().UnixMilli()
	resultFor := func(mark int, id string) *flotillapb.CommandResult {
		t.Helper()
		return agenttest.WaitFor[flotillapb.CommandResult](srv, mark, "dev-1", topic.CommandResult,
			func(c *flotillapb.CommandResult) bool { return c.GetCommandId() == id })
	}

	srv.PublishCommand(&flotillapb.Command{Id: "c1", DeviceId: "dev-1", IssuedAtMs: now, Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}})
	if res := resultFor(0, "c1"); !res.GetOk() || res.GetFinishedAtMs() != now {
		t.Errorf("ping result = %v", res)
	}

	mark := srv.Mark()
	srv.PublishCommand(&flotillapb.Command{Id: "c2", DeviceId: "dev-1", Kind: &flotillapb.Command_Resync{Resync: &flotillapb.Resync{}}})
	if res := resultFor(mark, "c2"); !res.GetOk() {
		t.Errorf("resync result = %v", res)
	}
	agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-1", topic.Birth, nil)
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-1", topic.Reported, nil)

	// A kind from a newer control plane: field 99 of Command.
	unknown, _ := wire.Encode(&flotillapb.Command{Id: "c3", DeviceId: "dev-1"})
	unknown = protowire.AppendTag(unknown, 99, protowire.BytesType)
	unknown = protowire.AppendBytes(unknown, nil)
	srv.Publish(srv.Scheme().Device(topic.Command, "dev-1"), unknown, false)
	if res := resultFor(0, "c3"); res.GetOk() || res.GetError() != "unsupported command" {
		t.Errorf("unknown command result = %v", res)
	}

	// An expired command is ignored; the next one is still answered.
	srv.PublishCommand(&flotillapb.Command{Id: "c4", DeviceId: "dev-1", ExpiresAtMs: now - 1, Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}})
	srv.PublishCommand(&flotillapb.Command{Id: "c5", DeviceId: "dev-1", Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}})
	resultFor(0, "c5")
	if got := r.Status().Counters; got[CounterCommandsExpired] != 1 || got[CounterCommands] != 4 {
		t.Errorf("counters = %v", got)
	}
	for _, m := range srv.Messages() {
		var c flotillapb.CommandResult
		if wire.DecodeTopic(topic.CommandResult, m.Payload, &c) == nil && c.GetCommandId() == "c4" {
			t.Error("an expired command was answered")
		}
	}

	// Acks are counted; a malformed one is dropped.
	srv.PublishAck(&flotillapb.Ack{DeviceId: "dev-1", Epoch: "e", Sequences: []uint64{1, 2}})
	srv.Publish(srv.Scheme().Device(topic.Ack, "dev-1"), []byte{0x0a, 0x05}, false)
	eventually(t, "acks", func() bool {
		c := r.Status().Counters
		return c[CounterAcks] == 1 && c[CounterMalformed] == 1
	})
}

// TestHeartbeatHint: the desired state's heartbeat hint replaces the
// configured interval at once; an out-of-range hint is ignored, leaving the
// configured interval.
func TestHeartbeatHint(t *testing.T) {
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg := testConfig(t, srv, "dev-hb")
	cfg.Clock = clock
	cfg.HeartbeatInterval = 10 * time.Second
	r := start(t, cfg)
	eventually(t, "connected", func() bool { return r.Status().State == StateConnected })
	eventually(t, "heartbeat timer", func() bool { return clock.Waiters() > 0 })
	w0 := clock.Waiters()
	beats := func() int64 { return r.Status().Counters[CounterHeartbeats] }

	srv.PublishDesired(&flotillapb.DesiredState{DeviceId: "dev-hb", Revision: 1, Hints: &flotillapb.DesiredHints{HeartbeatIntervalS: 60}})
	eventually(t, "a 60 s timer beside the abandoned 10 s one", func() bool { return clock.Waiters() == w0+1 })
	// With the configured 10 s, 59 s would hold five heartbeats; with the
	// 60 s hint, none.
	clock.Advance(59 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := beats(); n != 0 {
		t.Fatalf("%d heartbeats within 59 s of a 60 s hint", n)
	}
	clock.Advance(time.Second)
	eventually(t, "heartbeat at 60 s", func() bool { return beats() == 1 })
	eventually(t, "timer re-armed", func() bool { return clock.Waiters() == w0 })

	// A hint of 1 s is out of range and ignored: the configured 10 s
	// applies again.
	srv.PublishDesired(&flotillapb.DesiredState{DeviceId: "dev-hb", Revision: 2, Hints: &flotillapb.DesiredHints{HeartbeatIntervalS: 1}})
	eventually(t, "a 10 s timer beside the abandoned 60 s one", func() bool { return clock.Waiters() == w0+1 })
	clock.Advance(9 * time.Second)
	time.Sleep(200 * time.Millisecond)
	if n := beats(); n != 1 {
		t.Fatalf("%d heartbeats within 9 s: the 1 s hint was applied", n)
	}
	clock.Advance(time.Second)
	eventually(t, "heartbeat at 10 s", func() bool { return beats() == 2 })
}
