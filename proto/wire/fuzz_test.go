package wire_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// fuzzDecode is the property every inbound decoder must hold: no panic; on
// error the target is unchanged; on success the message re-encodes and
// decodes to an equal message (nothing accepted that we cannot send on).
func fuzzDecode[M proto.Message](f *testing.F, k topic.Kind, newM func() M, seeds ...M) {
	for _, s := range seeds {
		b, err := wire.Encode(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newM()
		sentinel := proto.Clone(m)
		if err := wire.DecodeTopic(k, data, m); err != nil {
			if !proto.Equal(m, sentinel) {
				t.Fatalf("target changed on error %v", err)
			}
			return
		}
		again, err := wire.Encode(m)
		if err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
		m2 := newM()
		if err := wire.DecodeTopic(k, again, m2); err != nil {
			t.Fatalf("re-encoded message refused: %v", err)
		}
		if !proto.Equal(m, m2) {
			t.Fatalf("round trip changed the message")
		}
	})
}

func FuzzBirth(f *testing.F) {
	fuzzDecode(f, topic.Birth, func() *pb.Birth { return new(pb.Birth) }, validBirth())
}

func FuzzStatus(f *testing.F) {
	fuzzDecode(f, topic.Status, func() *pb.Status { return new(pb.Status) },
		&pb.Status{DeviceId: "d", State: pb.Status_STATE_OFFLINE, Reason: "lost"})
}

func FuzzHeartbeat(f *testing.F) {
	fuzzDecode(f, topic.Heartbeat, func() *pb.Heartbeat { return new(pb.Heartbeat) },
		&pb.Heartbeat{DeviceId: "d", UptimeMs: 5, Reconnects: 2})
}

func FuzzReported(f *testing.F) {
	fuzzDecode(f, topic.Reported, func() *pb.ReportedState { return new(pb.ReportedState) },
		&pb.ReportedState{DeviceId: "d", DesiredRevision: 3, Models: []*pb.ModelState{{Name: "digits", ActiveRelease: 2}}})
}

func FuzzDesired(f *testing.F) {
	fuzzDecode(f, topic.Desired, func() *pb.DesiredState { return new(pb.DesiredState) },
		&pb.DesiredState{DeviceId: "d", Revision: 4, DirectorMetadata: map[string][]byte{"targets.json": []byte("{}")},
			Hints: &pb.DesiredHints{HeartbeatIntervalS: 10}})
}

func FuzzCommand(f *testing.F) {
	fuzzDecode(f, topic.Command, func() *pb.Command { return new(pb.Command) },
		&pb.Command{Id: "c1", DeviceId: "d", Kind: &pb.Command_Ping{Ping: &pb.Ping{}}})
}

func FuzzCommandResult(f *testing.F) {
	fuzzDecode(f, topic.CommandResult, func() *pb.CommandResult { return new(pb.CommandResult) },
		&pb.CommandResult{CommandId: "c1", DeviceId: "d", Ok: true})
}

func FuzzTelemetry(f *testing.F) {
	fuzzDecode(f, topic.Telemetry, func() *pb.Telemetry { return new(pb.Telemetry) },
		&pb.Telemetry{DeviceId: "d", Epoch: "e1", Sequence: 1, Payload: &pb.Telemetry_Events{Events: &pb.Events{
			Events: []*pb.Event{{Level: "error", Code: "model.rollback", Attrs: map[string]string{"k": "v"}}}}}})
}

func FuzzAck(f *testing.F) {
	fuzzDecode(f, topic.Ack, func() *pb.Ack { return new(pb.Ack) },
		&pb.Ack{DeviceId: "d", Epoch: "e1", Sequences: []uint64{1, 2, 3}})
}
