package telemetry

import (
	"bytes"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func fastSeed(features int) *pb.Telemetry {
	s := &pb.WindowSummary{Model: "digits", Release: 3, Slot: "a", StartMs: 1000, EndMs: 61000, Windows: 1,
		Requests: 100, Errors: 2, Latency: &pb.LatencySketch{RelativeAccuracy: 0.01, Offset: 3, Counts: []uint64{1, 2}, Sum: 9}}
	for f := range features {
		s.Features = append(s.Features, &pb.FeatureSummary{Name: "p" + string(rune('a'+f%26)), Count: 100,
			Min: 0, Max: 1, Mean: 0.5, M2: 3, Bins: []uint64{1, 2, 3, 94}})
	}
	return &pb.Telemetry{DeviceId: "dev-1", Epoch: "e", Sequence: 7, Payload: &pb.Telemetry_Summaries{
		Summaries: &pb.Summaries{Summaries: []*pb.WindowSummary{s, proto.Clone(s).(*pb.WindowSummary)}}}}
}

// fastSeeds are payloads the fast path must judge as the full decode does:
// good ones, and each of its checks broken once.
func fastSeeds(t testing.TB) [][]byte {
	enc := func(m *pb.Telemetry) []byte {
		b, err := wire.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := fastSeed(4)
	out := [][]byte{enc(good), enc(fastSeed(0))}
	for _, breakIt := range []func(f *pb.FeatureSummary, s *pb.WindowSummary){
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Mean = math.NaN() },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Max = math.Inf(1) },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.M2 = -1 },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Min = 2 },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Name = "" },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Name = string(bytes.Repeat([]byte("n"), 257)) },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Bins = []uint64{math.MaxUint64, 1} },
		func(f *pb.FeatureSummary, _ *pb.WindowSummary) { f.Bins = make([]uint64, maxFeatureBins+1) },
		func(_ *pb.FeatureSummary, s *pb.WindowSummary) { s.Errors = s.Requests + 1 },
		func(_ *pb.FeatureSummary, s *pb.WindowSummary) { s.Model = "" },
		func(_ *pb.FeatureSummary, s *pb.WindowSummary) { s.Latency.Sum = math.NaN() },
	} {
		m := fastSeed(3)
		s := m.GetSummaries().GetSummaries()[1]
		breakIt(s.Features[2], s)
		out = append(out, enc(m))
	}
	// A feature's bins unpacked, its name invalid UTF-8, a bin sent as
	// fixed64, an unknown field, the summaries field twice, events beside
	// summaries, garbage and truncation.
	g := enc(good)
	feat := protowire.AppendTag(nil, featureName, protowire.BytesType)
	feat = protowire.AppendString(feat, "x")
	unpacked := append(append([]byte{}, feat...), protowire.AppendVarint(protowire.AppendTag(nil, featureBins, protowire.VarintType), 5)...)
	badName := protowire.AppendString(protowire.AppendTag(nil, featureName, protowire.BytesType), "\xff")
	fixedBin := append(append([]byte{}, feat...), protowire.AppendFixed64(protowire.AppendTag(nil, featureBins, protowire.Fixed64Type), 5)...)
	unknown := append(append([]byte{}, feat...), protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1)...)
	for _, f := range [][]byte{unpacked, badName, fixedBin, unknown} {
		out = append(out, withFeature(t, good, f))
	}
	twice := append(append([]byte{}, g...), protowire.AppendBytes(protowire.AppendTag(nil, telemetrySummaries, protowire.BytesType), mustEncode(t, good.GetSummaries()))...)
	events := append(append([]byte{}, g...), protowire.AppendBytes(protowire.AppendTag(nil, telemetryEvents, protowire.BytesType), nil)...)
	return append(out, twice, events, []byte{0xff, 0xff}, g[:len(g)/2], g[:len(g)-1])
}

// withFeature is good with one more feature, encoded as f, in its first
// summary.
func withFeature(t testing.TB, good *pb.Telemetry, f []byte) []byte {
	s := mustEncode(t, good.GetSummaries().GetSummaries()[0])
	s = protowire.AppendBytes(protowire.AppendTag(s, windowFeatures, protowire.BytesType), f)
	ss := protowire.AppendBytes(protowire.AppendTag(nil, summariesSummary, protowire.BytesType), s)
	env := proto.Clone(good).(*pb.Telemetry)
	env.Payload = nil
	b := mustEncode(t, env)
	return protowire.AppendBytes(protowire.AppendTag(b, telemetrySummaries, protowire.BytesType), ss)
}

func mustEncode(t testing.TB, m proto.Message) []byte {
	b, err := wire.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzDecodeFast checks the fast path against the full decode: what the
// fast path accepts the full decode accepts, with the same envelope,
// headers and bytes; and a summaries message without events that the full
// decode accepts, the fast path accepts too (so it is not falling back for
// want of a rule).
func FuzzDecodeFast(f *testing.F) {
	for _, s := range fastSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		ft, heads, raw, fastErr := decodeFast(payload)
		full, fullRaw, fullErr := decodeFull(payload)
		if fastErr == nil {
			if fullErr != nil {
				t.Fatalf("fast path accepted what the full decode refuses: %v", fullErr)
			}
			want := full.GetSummaries().GetSummaries()
			if len(heads) != len(want) || len(raw) != len(fullRaw) {
				t.Fatalf("fast: %d summaries, full: %d", len(heads), len(want))
			}
			for i, w := range want {
				w = proto.Clone(w).(*pb.WindowSummary)
				w.Features = nil
				if !proto.Equal(heads[i], w) || !bytes.Equal(raw[i], fullRaw[i]) {
					t.Fatalf("summary %d: fast %v, full %v", i, heads[i], w)
				}
			}
			env := proto.Clone(full).(*pb.Telemetry)
			env.Payload = nil
			if !proto.Equal(ft, env) {
				t.Fatalf("envelope: fast %v, full %v", ft, env)
			}
			return
		}
		if fullErr == nil && full.GetSummaries() != nil && !hasField(payload, telemetryEvents) {
			t.Fatalf("full decode accepted what the fast path sent to it: %v", fastErr)
		}
	})
}

// hasField reports whether the encoded message b has a top-level field num.
func hasField(b []byte, num protowire.Number) bool {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return false
		}
		if n == num {
			return true
		}
		m := protowire.ConsumeFieldValue(n, typ, b[l:])
		if m < 0 {
			return false
		}
		b = b[l+m:]
	}
	return false
}

// TestDecodeFastTakesGoodSummaries: a good summaries message takes the fast
// path, and each seed that breaks a rule is refused by Decode as hostile.
func TestDecodeFastTakesGoodSummaries(t *testing.T) {
	if _, heads, _, err := decodeFast(mustEncode(t, fastSeed(64))); err != nil || len(heads) != 2 || heads[0].GetModel() != "digits" || len(heads[0].GetFeatures()) != 0 {
		t.Fatalf("fast path: %d heads, %v", len(heads), err)
	}
	in := NewIngest(nil, nil, Options{})
	seeds := fastSeeds(t)
	accepted := 0
	for i, s := range seeds {
		if _, err := in.Decode(topic.Default().Device(topic.Telemetry, "dev-1"), s); err == nil {
			accepted++
		} else if i < 2 {
			t.Errorf("seed %d refused: %v", i, err)
		}
	}
	// Accepted: the two good ones, unpacked bins, an unknown field, the
	// summaries field twice, and events after summaries (the oneof's last).
	if accepted != 6 {
		t.Errorf("%d of %d seeds accepted, want 6", accepted, len(seeds))
	}
}
