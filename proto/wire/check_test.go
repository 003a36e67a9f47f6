package wire_test

import (
	"errors"
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// reflectWrongType is the wire-type check Decode used before it read the
// bytes directly: walk the decoded message and refuse a known field number
// among the unknown fields. It is kept here as the reference the byte walk
// must never be weaker than.
func reflectWrongType(m protoreflect.Message) bool {
	fields := m.Descriptor().Fields()
	unknown := m.GetUnknown()
	for len(unknown) > 0 {
		num, typ, n := protowire.ConsumeTag(unknown)
		if n < 0 {
			return true
		}
		if fields.ByNumber(num) != nil {
			return true
		}
		unknown = unknown[n:]
		k := protowire.ConsumeFieldValue(num, typ, unknown)
		if k < 0 {
			return true
		}
		unknown = unknown[k:]
	}
	bad := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					bad = reflectWrongType(mv.Message())
					return !bad
				})
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := 0; i < v.List().Len() && !bad; i++ {
					bad = reflectWrongType(v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			bad = reflectWrongType(v.Message())
		}
		return !bad
	})
	return bad
}

// FuzzWireTypesNoWeaker: whatever the reflection walk refused as a wrong
// wire type, the byte walk refuses too, on the messages with the deepest
// nesting, repeated numbers and maps (Telemetry with summaries or events,
// the manifest).
func FuzzWireTypesNoWeaker(f *testing.F) {
	for _, m := range []proto.Message{telemetryWithSummaries(), validManifest(),
		&pb.Telemetry{DeviceId: "d", Epoch: "e", Sequence: 1, Payload: &pb.Telemetry_Events{Events: &pb.Events{
			Events: []*pb.Event{{Level: "warn", Code: "x", Attrs: map[string]string{"a": "b"}}}}}}} {
		b := mustEncode(f, m)
		f.Add(b, uint16(0), byte(0))
		f.Add(b, uint16(len(b)/3), byte(0x22))
	}
	f.Fuzz(func(t *testing.T, data []byte, at uint16, tag byte) {
		if int(at) < len(data) { // flip one byte into a tag-like value
			data = append([]byte(nil), data...)
			data[at] = tag
		}
		for _, newM := range []func() proto.Message{
			func() proto.Message { return new(pb.Telemetry) },
			func() proto.Message { return new(pb.BundleManifest) },
		} {
			ref := newM()
			if proto.Unmarshal(data, ref) != nil {
				continue
			}
			err := wire.Decode(data, 1<<24, newM())
			if reflectWrongType(ref.ProtoReflect()) && !errors.Is(err, wire.ErrWrongType) && !errors.Is(err, wire.ErrMalformed) {
				t.Fatalf("%T: the reflection walk refuses a wrong wire type, Decode gave %v", ref, err)
			}
		}
	})
}

func telemetryWithSummaries() *pb.Telemetry {
	s := &pb.WindowSummary{Model: "digits", Release: 1, StartMs: 1, EndMs: 2, Windows: 1, Requests: 3,
		Latency:  &pb.LatencySketch{RelativeAccuracy: 0.01, Offset: -3, Counts: []uint64{1, 2}, Sum: 3},
		Features: []*pb.FeatureSummary{{Name: "x", Count: 3, Min: 0, Max: 1, Mean: 0.5, Bins: []uint64{0, 1, 2, 0}}},
	}
	return &pb.Telemetry{DeviceId: "d", Epoch: "e", Sequence: 1,
		Payload: &pb.Telemetry_Summaries{Summaries: &pb.Summaries{Summaries: []*pb.WindowSummary{s}}}}
}

// nest wraps inner as field num (length-delimited) after prefix.
func nest(prefix []byte, num protowire.Number, inner []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(prefix, num, protowire.BytesType), inner)
}

// TestWireTypesDeep: a wrong wire type deep in a summary, in a map entry,
// or a scalar sent packed is refused; repeated numbers packed and unpacked
// are both accepted; every target is left as it was.
func TestWireTypesDeep(t *testing.T) {
	head := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "d")
	head = protowire.AppendString(protowire.AppendTag(head, 2, protowire.BytesType), "e")
	head = protowire.AppendVarint(protowire.AppendTag(head, 3, protowire.VarintType), 1)
	summary := func(feature []byte) []byte {
		head := append([]byte(nil), head...)
		ws := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "digits")
		ws = protowire.AppendVarint(protowire.AppendTag(ws, 6, protowire.VarintType), 1)
		ws = protowire.AppendVarint(protowire.AppendTag(ws, 7, protowire.VarintType), 2)
		ws = protowire.AppendVarint(protowire.AppendTag(ws, 8, protowire.VarintType), 1)
		ws = nest(ws, 12, feature)
		return nest(head, 11, nest(nil, 1, ws))
	}
	name := func() []byte { return protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), "x") }
	unpacked := protowire.AppendVarint(protowire.AppendTag(name(), 11, protowire.VarintType), 4)
	unpacked = protowire.AppendVarint(protowire.AppendTag(unpacked, 11, protowire.VarintType), 5)
	packed := nest(name(), 11, protowire.AppendVarint(protowire.AppendVarint(nil, 4), 5))
	countPacked := nest(name(), 2, protowire.AppendVarint(nil, 4))                                // count (uint64) as bytes
	meanVarint := protowire.AppendVarint(protowire.AppendTag(name(), 9, protowire.VarintType), 1) // mean (double) as varint
	entry := protowire.AppendVarint(protowire.AppendTag(nil, 1, protowire.VarintType), 7)         // attrs key (string) as varint
	entry = protowire.AppendString(protowire.AppendTag(entry, 2, protowire.BytesType), "v")
	event := protowire.AppendString(protowire.AppendTag(nil, 3, protowire.BytesType), "code")
	event = nest(event, 5, entry)
	badMap := nest(append([]byte(nil), head...), 10, nest(nil, 1, event))

	for name, c := range map[string]struct {
		data []byte
		want error
	}{
		"bins unpacked":      {summary(unpacked), nil},
		"bins packed":        {summary(packed), nil},
		"scalar sent packed": {summary(countPacked), wire.ErrWrongType},
		"double as varint":   {summary(meanVarint), wire.ErrWrongType},
		"map key as varint":  {badMap, wire.ErrWrongType},
	} {
		for _, fresh := range []bool{true, false} {
			target := new(pb.Telemetry)
			if !fresh {
				target = &pb.Telemetry{DeviceId: "keep", Epoch: "k", Sequence: 9}
			}
			before := proto.Clone(target)
			err := wire.DecodeTopic(topic.Telemetry, c.data, target)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Errorf("%s (fresh %v): %v, want %v", name, fresh, err, c.want)
				continue
			}
			if err != nil && !proto.Equal(target, before) {
				t.Errorf("%s (fresh %v): target changed on error", name, fresh)
			}
			if err == nil {
				bins := target.GetSummaries().GetSummaries()[0].GetFeatures()[0].GetBins()
				if len(bins) != 2 || bins[0] != 4 || bins[1] != 5 {
					t.Errorf("%s: bins %v", name, bins)
				}
			}
		}
	}
}

// decodeBefore is Decode as it was before it decoded a fresh target in
// place and checked wire types on the bytes: into a scratch message, the
// reflection walk, Validate, then a copy into the target.
func decodeBefore(data []byte, m proto.Message) error {
	tmp := m.ProtoReflect().New().Interface()
	if err := proto.Unmarshal(data, tmp); err != nil {
		return err
	}
	if reflectWrongType(tmp.ProtoReflect()) {
		return wire.ErrWrongType
	}
	if v, ok := tmp.(wire.Validator); ok {
		if err := v.Validate(); err != nil {
			return err
		}
	}
	proto.Reset(m)
	proto.Merge(m, tmp)
	return nil
}

// BenchmarkDecode is one digits-sized telemetry message (64 features of 17
// bins) decoded into a fresh target, as the ingest does: the way Decode
// worked before (scratch message, reflection walk, copy) and now, side by
// side.
func BenchmarkDecode(b *testing.B) {
	m := telemetryWithSummaries()
	s := m.GetSummaries().GetSummaries()[0]
	s.Features = nil
	for i := range 64 {
		s.Features = append(s.Features, &pb.FeatureSummary{Name: fmt.Sprint("p", i), Count: 100, Max: 1, Mean: 0.5,
			M2: 8, Bins: make([]uint64, 17)})
	}
	data := mustEncode(b, m)
	for _, c := range []struct {
		name   string
		decode func([]byte, proto.Message) error
	}{
		{"before", decodeBefore},
		{"now", func(d []byte, m proto.Message) error { return wire.DecodeTopic(topic.Telemetry, d, m) }},
	} {
		decode := c.decode
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				var t pb.Telemetry
				if err := decode(data, &t); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
