package agent

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

const fuzzID = "dev-1"

func seed(f *testing.F, msgs ...proto.Message) {
	for _, m := range msgs {
		b, err := wire.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add(protowire.AppendTag(nil, 1, protowire.VarintType)) // device_id with the wrong wire type
}

func FuzzDecodeDesired(f *testing.F) {
	seed(f,
		&flotillapb.DesiredState{DeviceId: fuzzID, Revision: 1},
		&flotillapb.DesiredState{DeviceId: fuzzID, Revision: 7, DirectorMetadata: map[string][]byte{"targets": []byte("{}")},
			Hints: &flotillapb.DesiredHints{HeartbeatIntervalS: 10, Labels: map[string]string{"a": "b"}}},
		&flotillapb.DesiredState{DeviceId: "dev-2", Revision: 1},
		&flotillapb.DesiredState{DeviceId: fuzzID},
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		ds, err := decodeDesired(fuzzID, b)
		if err != nil {
			return
		}
		if ds.GetDeviceId() != fuzzID || ds.GetRevision() == 0 {
			t.Fatalf("accepted %v", ds)
		}
	})
}

func FuzzDecodeCommand(f *testing.F) {
	seed(f,
		&flotillapb.Command{Id: "c", DeviceId: fuzzID, Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}},
		&flotillapb.Command{Id: "c", DeviceId: fuzzID, ExpiresAtMs: 5, Kind: &flotillapb.Command_Resync{Resync: &flotillapb.Resync{}}},
		&flotillapb.Command{Id: "c", DeviceId: fuzzID},
		&flotillapb.Command{Id: "c", DeviceId: "dev-2", Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}},
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := decodeCommand(fuzzID, b)
		if err != nil && c == nil {
			return
		}
		if c.GetDeviceId() != fuzzID || c.GetId() == "" {
			t.Fatalf("accepted %v (err %v)", c, err)
		}
		if (err == nil) != (c.GetKind() != nil) {
			t.Fatalf("kind %v with err %v", c.GetKind(), err)
		}
	})
}

func FuzzDecodeAck(f *testing.F) {
	seed(f,
		&flotillapb.Ack{DeviceId: fuzzID, Epoch: "e", Sequences: []uint64{1, 2, 3}},
		&flotillapb.Ack{DeviceId: fuzzID},
		&flotillapb.Ack{DeviceId: "dev-2", Epoch: "e"},
	)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := decodeAck(fuzzID, b)
		if err != nil {
			return
		}
		if a.GetDeviceId() != fuzzID || a.GetEpoch() == "" {
			t.Fatalf("accepted %v", a)
		}
	})
}
