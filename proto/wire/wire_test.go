package wire_test

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func validBirth() *pb.Birth {
	return &pb.Birth{
		DeviceId: "dev-1", AgentVersion: "0.1.0", ProtocolVersion: wire.ProtocolVersion,
		Facts:  &pb.Facts{Os: "linux", Arch: "arm64", CpuFeatures: []string{"neon"}},
		Labels: map[string]string{"site": "lab"},
	}
}

func mustEncode(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := wire.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeRoundTrip(t *testing.T) {
	in := validBirth()
	var out pb.Birth
	if err := wire.DecodeTopic(topic.Birth, mustEncode(t, in), &out); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, &out) {
		t.Fatalf("got %v, want %v", &out, in)
	}
}

// TestDecodeRefuses checks each class of bad input gets its own error and
// leaves the target exactly as it was.
func TestDecodeRefuses(t *testing.T) {
	good := mustEncode(t, validBirth())
	wrongType := protowire.AppendTag(nil, 3, protowire.BytesType) // protocol_version as bytes
	wrongType = protowire.AppendBytes(wrongType, []byte("1"))
	wrongType = append(protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "dev-1"), wrongType...)
	nestedWrong := protowire.AppendTag(nil, 4, protowire.BytesType) // facts.os (string) as varint
	nestedWrong = protowire.AppendBytes(nestedWrong, protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7))
	nestedWrong = append(mustEncode(t, validBirth()), nestedWrong...)

	cases := []struct {
		name  string
		data  []byte
		limit int
		want  error
	}{
		{"oversize", good, len(good) - 1, wire.ErrTooLarge},
		{"truncated", good[:len(good)-3], 1 << 20, wire.ErrMalformed},
		{"garbage", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, 1 << 20, wire.ErrMalformed},
		{"wrong wire type", wrongType, 1 << 20, wire.ErrWrongType},
		{"wrong wire type nested", nestedWrong, 1 << 20, wire.ErrWrongType},
		{"missing device id", mustEncode(t, &pb.Birth{ProtocolVersion: 1}), 1 << 20, wire.ErrInvalid},
		{"missing protocol version", mustEncode(t, &pb.Birth{DeviceId: "d"}), 1 << 20, wire.ErrInvalid},
		{"device id with wildcard", mustEncode(t, &pb.Birth{DeviceId: "a/+", ProtocolVersion: 1}), 1 << 20, wire.ErrInvalid},
		{"invalid utf-8", append(protowire.AppendTag(nil, 2, protowire.BytesType), 2, 0xc3, 0x28), 1 << 20, wire.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := &pb.Birth{DeviceId: "keep", ProtocolVersion: 9}
			before := proto.Clone(target)
			err := wire.Decode(c.data, c.limit, target)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !proto.Equal(target, before) {
				t.Fatalf("target changed on error: %v", target)
			}
		})
	}
}

// TestUnknownFieldsPreserved: a message from a newer peer with a field this
// build does not know decodes, and re-encodes with that field intact.
func TestUnknownFieldsPreserved(t *testing.T) {
	data := mustEncode(t, validBirth())
	data = protowire.AppendTag(data, 999, protowire.BytesType)
	data = protowire.AppendString(data, "from the future")
	var b pb.Birth
	if err := wire.Decode(data, 1<<20, &b); err != nil {
		t.Fatal(err)
	}
	again := mustEncode(t, &b)
	if !strings.Contains(string(again), "from the future") {
		t.Fatal("unknown field lost on re-encode")
	}
}

func TestDecodeTopicChecksMessageType(t *testing.T) {
	var s pb.Status
	if err := wire.DecodeTopic(topic.Birth, mustEncode(t, validBirth()), &s); err == nil {
		t.Fatal("decoded a birth topic into a Status")
	}
}

// TestTableMessagesExist: every message the topic table names is compiled
// in and has a Validate method.
func TestTableMessagesExist(t *testing.T) {
	for _, e := range topic.Table {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(e.Message))
		if err != nil {
			t.Errorf("%s: message %s: %v", e.Kind, e.Message, err)
			continue
		}
		if _, ok := mt.New().Interface().(wire.Validator); !ok {
			t.Errorf("%s: %s has no Validate method", e.Kind, e.Message)
		}
	}
}

func TestEnrolRequestProof(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	req := &pb.EnrolRequest{Token: "tok", DeviceId: "dev-1", PublicKey: pub}
	req.Signature = ed25519.Sign(priv, pb.EnrolProof(req.DeviceId, pub, req.Token))
	if err := req.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(r *pb.EnrolRequest){
		"other device":  func(r *pb.EnrolRequest) { r.DeviceId = "dev-2" },
		"other token":   func(r *pb.EnrolRequest) { r.Token = "tok2" },
		"short key":     func(r *pb.EnrolRequest) { r.PublicKey = r.PublicKey[:31] },
		"no signature":  func(r *pb.EnrolRequest) { r.Signature = nil },
		"foreign key":   func(r *pb.EnrolRequest) { p, _, _ := ed25519.GenerateKey(nil); r.PublicKey = p },
		"bad device id": func(r *pb.EnrolRequest) { r.DeviceId = "../etc" },
	} {
		r := proto.Clone(req).(*pb.EnrolRequest)
		mutate(r)
		if r.Validate() == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
