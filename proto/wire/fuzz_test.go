package wire_test

import (
	"math"
	"strings"
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

func FuzzSupportChunk(f *testing.F) {
	fuzzDecode(f, topic.SupportUpload, func() *pb.SupportChunk { return new(pb.SupportChunk) },
		&pb.SupportChunk{UploadId: "u1", DeviceId: "d", Index: 1, Count: 2, TotalSize: 5, Sha256: sum32(1), ChunkSha256: sum32(2), Data: []byte("ab"), Signature: []byte("{}")})
}

func FuzzSupportAck(f *testing.F) {
	fuzzDecode(f, topic.SupportAck, func() *pb.SupportAck { return new(pb.SupportAck) },
		&pb.SupportAck{UploadId: "u1", DeviceId: "d", Next: 2, Done: true})
}

func sum32(b byte) []byte {
	s := make([]byte, 32)
	for i := range s {
		s[i] = b + byte(i)
	}
	return s
}

// validManifest is a small manifest that passes Validate: two files, one of
// them split into two chunks, with every optional section filled in.
func validManifest() *pb.BundleManifest {
	return &pb.BundleManifest{
		SchemaVersion: pb.ManifestSchemaVersion, Name: "digits", Release: 3, Version: "1.2.0",
		Kind:     pb.BundleKind_BUNDLE_KIND_MODEL,
		Variants: []*pb.RuntimeVariant{{Runtime: "onnx", Accelerators: []string{"cuda"}, Entry: "model.onnx", Options: map[string]string{"threads": "2"}}},
		Inputs:   []*pb.TensorInfo{{Name: "pixels", Dtype: 1, Shape: []int64{-1, 2}}},
		Outputs:  []*pb.TensorInfo{{Name: "probabilities", Dtype: 1, Shape: []int64{-1, 1}}},
		Golden: &pb.GoldenCheck{
			Inputs:       []*pb.Tensor{{Name: "pixels", Dtype: 1, Shape: []int64{1, 2}, Data: make([]byte, 8)}},
			Expected:     []*pb.Tensor{{Name: "probabilities", Dtype: 1, Shape: []int64{1, 1}, Data: make([]byte, 4)}},
			AbsTolerance: 1e-4,
		},
		Probation: &pb.ProbationPolicy{DurationS: 600, MaxErrorRate: 0.01, MaxP95LatencyRatio: 1.5, Shadow: true, MaxDisagreementRate: 0.05},
		Drift: &pb.DriftBaseline{
			// With a monitor function, feature i is its i-th result.
			Features:   []*pb.FeatureBaseline{{Name: "ink", Index: 1, BinEdges: []float64{0.25, 0.5}, Counts: []uint64{1, 2, 3}}},
			Prediction: &pb.FeatureBaseline{Name: "class", Categories: []string{"0", "1"}, Counts: []uint64{5, 5, 0}},
			Thresholds: &pb.DriftThresholds{Js: 0.1, Psi: 0.2, Ks: 0.1},
		},
		Monitor: &pb.MonitorFunction{File: "monitor.wasm", Export: "features", SampleEvery: 10},
		Files: []*pb.BundleFile{
			{Path: "model.onnx", Size: 5000, Mode: 0o644, ChunkSize: 4096, Sha256: sum32(1),
				Chunks: []*pb.ChunkInfo{{Sha256: sum32(2), Length: 4096}, {Sha256: sum32(3), Length: 904}}},
			{Path: "monitor.wasm", Size: 0, Mode: 0o755, ChunkSize: pb.DefaultChunkSize, Sha256: sum32(4)},
		},
	}
}

// FuzzManifest: decoding plus Validate of a hostile manifest never panics,
// and what it accepts round-trips.
func FuzzManifest(f *testing.F) {
	good := mustEncode(f, validManifest())
	f.Add(good)
	f.Add(good[:len(good)/2])
	for _, mutate := range []func(m *pb.BundleManifest){
		func(m *pb.BundleManifest) { m.Files[0].Path = "../model.onnx" },
		func(m *pb.BundleManifest) { m.Files[0].Path = "/etc/passwd" },
		func(m *pb.BundleManifest) { m.Files[1].Path = "model.onnx" },
		func(m *pb.BundleManifest) { m.Files[0].Mode = 0o4755 },
		func(m *pb.BundleManifest) { m.Files[0].Chunks[1].Length = 905 },
		func(m *pb.BundleManifest) { m.SchemaVersion = 99 },
	} {
		m := validManifest()
		mutate(m)
		f.Add(mustEncode(f, m))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(pb.BundleManifest)
		if err := wire.Decode(data, pb.MaxManifestSize, m); err != nil {
			if !proto.Equal(m, new(pb.BundleManifest)) {
				t.Fatalf("target changed on error %v", err)
			}
			return
		}
		again := mustEncode(t, m)
		m2 := new(pb.BundleManifest)
		if err := wire.Decode(again, pb.MaxManifestSize, m2); err != nil {
			t.Fatalf("re-encoded manifest refused: %v", err)
		}
		if !proto.Equal(m, m2) {
			t.Fatal("round trip changed the manifest")
		}
	})
}

func FuzzChunk(f *testing.F) {
	fuzzDecode(f, topic.BundleChunks, func() *pb.Chunk { return new(pb.Chunk) },
		&pb.Chunk{BundleDigest: strings.Repeat("ab", 32), FileIndex: 1, ChunkIndex: 2, Sha256: sum32(0), Data: []byte("chunk")})
}

func FuzzChunkRequest(f *testing.F) {
	fuzzDecode(f, topic.ChunkRequest, func() *pb.ChunkRequest { return new(pb.ChunkRequest) },
		&pb.ChunkRequest{DeviceId: "d", BundleDigest: strings.Repeat("0f", 32), Ranges: []*pb.ChunkRange{{FileIndex: 0, First: 3, Count: 2}}})
}

func FuzzReleaseMetadata(f *testing.F) {
	fuzzDecode(f, topic.ReleaseMeta, func() *pb.ReleaseMetadata { return new(pb.ReleaseMetadata) },
		&pb.ReleaseMetadata{Metadata: map[string][]byte{"root.json": []byte(`{"signed":{}}`), "timestamp.json": []byte("{}")}})
}

// TestManifestValidate: the seed manifest is valid and each hostile or
// inconsistent change to it is refused.
func TestManifestValidate(t *testing.T) {
	if err := validManifest().Validate(); err != nil {
		t.Fatalf("valid manifest refused: %v", err)
	}
	cases := map[string]func(m *pb.BundleManifest){
		"no schema version":     func(m *pb.BundleManifest) { m.SchemaVersion = 0 },
		"newer schema":          func(m *pb.BundleManifest) { m.SchemaVersion = pb.ManifestSchemaVersion + 1 },
		"bad name":              func(m *pb.BundleManifest) { m.Name = "Digits/x" },
		"zero release":          func(m *pb.BundleManifest) { m.Release = 0 },
		"no kind":               func(m *pb.BundleManifest) { m.Kind = 0 },
		"no variants":           func(m *pb.BundleManifest) { m.Variants = nil },
		"entry not a file":      func(m *pb.BundleManifest) { m.Variants[0].Entry = "other.onnx" },
		"dotdot":                func(m *pb.BundleManifest) { m.Files[0].Path = "../model.onnx" },
		"inner dotdot":          func(m *pb.BundleManifest) { m.Files[0].Path = "a/../../model.onnx" },
		"absolute":              func(m *pb.BundleManifest) { m.Files[0].Path = "/model.onnx" },
		"backslash":             func(m *pb.BundleManifest) { m.Files[0].Path = `a\model.onnx` },
		"nul":                   func(m *pb.BundleManifest) { m.Files[0].Path = "model\x00.onnx" },
		"not clean":             func(m *pb.BundleManifest) { m.Files[0].Path = "a//model.onnx" },
		"dot segment":           func(m *pb.BundleManifest) { m.Files[0].Path = "./model.onnx" },
		"trailing slash":        func(m *pb.BundleManifest) { m.Files[0].Path = "model.onnx/" },
		"too long":              func(m *pb.BundleManifest) { m.Files[0].Path = strings.Repeat("a/", 600) + "m" },
		"long segment":          func(m *pb.BundleManifest) { m.Files[0].Path = strings.Repeat("a", 256) },
		"duplicate":             func(m *pb.BundleManifest) { m.Files[1] = m.Files[0] },
		"unsorted":              func(m *pb.BundleManifest) { m.Files[0], m.Files[1] = m.Files[1], m.Files[0] },
		"file and folder":       func(m *pb.BundleManifest) { m.Files[1].Path = "model.onnx/x" },
		"setuid":                func(m *pb.BundleManifest) { m.Files[0].Mode = 0o4755 },
		"world writable":        func(m *pb.BundleManifest) { m.Files[0].Mode = 0o666 },
		"unreadable":            func(m *pb.BundleManifest) { m.Files[0].Mode = 0o055 },
		"chunk too small":       func(m *pb.BundleManifest) { m.Files[0].ChunkSize = 1024 },
		"chunk too big":         func(m *pb.BundleManifest) { m.Files[0].ChunkSize = pb.MaxChunkSize + 1 },
		"chunks short of size":  func(m *pb.BundleManifest) { m.Files[0].Size = 9000 },
		"last chunk wrong":      func(m *pb.BundleManifest) { m.Files[0].Chunks[1].Length = 905 },
		"middle chunk wrong":    func(m *pb.BundleManifest) { m.Files[0].Chunks[0].Length = 4000 },
		"chunk hash short":      func(m *pb.BundleManifest) { m.Files[0].Chunks[0].Sha256 = m.Files[0].Chunks[0].Sha256[:31] },
		"file hash missing":     func(m *pb.BundleManifest) { m.Files[0].Sha256 = nil },
		"file over limit":       func(m *pb.BundleManifest) { m.Files[0].Size = pb.MaxFileSize + 1 },
		"no files":              func(m *pb.BundleManifest) { m.Files = nil },
		"golden bad size":       func(m *pb.BundleManifest) { m.Golden.Inputs[0].Data = m.Golden.Inputs[0].Data[:7] },
		"golden off schema":     func(m *pb.BundleManifest) { m.Golden.Inputs[0].Shape = []int64{1, 3} },
		"golden nan tolerance":  func(m *pb.BundleManifest) { m.Golden.AbsTolerance = math.NaN() },
		"error rate over 1":     func(m *pb.BundleManifest) { m.Probation.MaxErrorRate = 1.5 },
		"edges not increasing":  func(m *pb.BundleManifest) { m.Drift.Features[0].BinEdges = []float64{0.5, 0.5} },
		"counts wrong length":   func(m *pb.BundleManifest) { m.Drift.Features[0].Counts = []uint64{1, 2} },
		"edges and categories":  func(m *pb.BundleManifest) { m.Drift.Prediction.BinEdges = []float64{1} },
		"repeated feature name": func(m *pb.BundleManifest) { m.Drift.Features = append(m.Drift.Features, m.Drift.Features[0]) },
		"monitor not a file":    func(m *pb.BundleManifest) { m.Monitor.File = "nope.wasm" },
		"monitor no export":     func(m *pb.BundleManifest) { m.Monitor.Export = "" },
		"monitor too sparse":    func(m *pb.BundleManifest) { m.Monitor.SampleEvery = pb.MaxMonitorSampleEvery + 1 },
		"monitor no input":      func(m *pb.BundleManifest) { m.Inputs = nil; m.Golden = nil },
		"monitor and a tensor":  func(m *pb.BundleManifest) { m.Drift.Features[0].Tensor = "pixels" },
		"negative threshold":    func(m *pb.BundleManifest) { m.Drift.Thresholds.Js = -1 },
	}
	for name, mutate := range cases {
		m := validManifest()
		mutate(m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzProgress(f *testing.F) {
	fuzzDecode(f, topic.Progress, func() *pb.FetchProgress { return new(pb.FetchProgress) },
		&pb.FetchProgress{DeviceId: "d", BundleDigest: strings.Repeat("ab", 32), Model: "digits", Release: 2,
			BytesHave: 10, BytesTotal: 20, ChunksHave: 1, ChunksTotal: 2, Rate: 5, State: pb.FetchProgress_STATE_FETCHING})
}

// FuzzManifestTopic: the manifest as it arrives on bundle/{bundle}/manifest,
// under that topic's size limit.
func FuzzManifestTopic(f *testing.F) {
	fuzzDecode(f, topic.Manifest, func() *pb.BundleManifest { return new(pb.BundleManifest) }, validManifest())
}
