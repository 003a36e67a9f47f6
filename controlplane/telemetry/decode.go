package telemetry

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// The summaries' fast path. A digits-sized summary is mostly its features
// (64 FeatureSummary messages of 17 bins); the store keeps each summary's
// bytes as sent and reads only its header (model, release, slot, window,
// requests, errors). So the fast path checks the features on the wire,
// with the rules of pb.WindowSummary.Validate and the wire-type check of
// wire.Decode, without building them, and decodes the rest of each
// summary (header, latency sketch, prediction, counters, scores: small)
// and the envelope with wire.Decode as before, their fields cut out of the
// payload. Anything it does not accept goes to the full decode (the path
// before), which gives the reason; a payload the fast path accepts the
// full decode accepts too, with the same header (FuzzDecodeFast checks
// this).

// Field numbers of flotilla.v1 messages the fast path walks.
const (
	telemetryEvents    = 10 // Telemetry.events (oneof payload)
	telemetrySummaries = 11 // Telemetry.summaries (oneof payload)
	summariesSummary   = 1  // Summaries.summaries
	windowFeatures     = 12 // WindowSummary.features

	featureName  = 1
	featureCount = 2
	featureMin   = 7
	featureM2    = 10
	featureBins  = 11

	// maxFeatureBins is the most bins one feature has (the bundle's bin
	// limit plus the two overflow bins), as pb.WindowSummary.Validate.
	maxFeatureBins = 1024 + 2
)

var errSlowPath = errors.New("not for the fast path")

// decodeFast decodes payload (of device id's telemetry topic) into the
// envelope t, each summary's header heads[i] (a WindowSummary without its
// features) and bytes raw[i]. On any error the caller decodes in full.
func decodeFast(payload []byte) (t *pb.Telemetry, heads []*pb.WindowSummary, raw [][]byte, err error) {
	if len(payload) > topic.MustLookup(topic.Telemetry).MaxSize {
		return nil, nil, nil, errSlowPath
	}
	// The envelope without its summaries, and the summaries' bytes.
	envelope := make([]byte, 0, 64)
	found := false
	b := payload
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, nil, nil, errSlowPath
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, nil, nil, errSlowPath
		}
		field := b[:n+m]
		value := b[n : n+m]
		b = b[n+m:]
		switch num {
		case telemetryEvents:
			return nil, nil, nil, errSlowPath // events: rare, and a oneof with summaries
		case telemetrySummaries:
			if typ != protowire.BytesType {
				return nil, nil, nil, errSlowPath
			}
			v, _ := protowire.ConsumeBytes(value)
			found = true
			if raw, err = appendSummaries(raw, v); err != nil {
				return nil, nil, nil, err
			}
		default:
			envelope = append(envelope, field...)
		}
	}
	if !found {
		return nil, nil, nil, errSlowPath
	}
	if len(raw) > pb.MaxSummaries {
		return nil, nil, nil, errSlowPath
	}
	t = &pb.Telemetry{}
	if err := wire.Decode(envelope, len(envelope), t); err != nil {
		return nil, nil, nil, errSlowPath
	}
	heads = make([]*pb.WindowSummary, len(raw))
	for i, s := range raw {
		if heads[i], err = decodeSummary(s); err != nil {
			return nil, nil, nil, err
		}
	}
	return t, heads, raw, nil
}

// appendSummaries appends each WindowSummary's bytes in the encoded
// Summaries b to raw. A field of Summaries other than its summaries is
// unknown (kept by protobuf, ignored here).
func appendSummaries(raw [][]byte, b []byte) ([][]byte, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errSlowPath
		}
		b = b[n:]
		if num == summariesSummary {
			if typ != protowire.BytesType {
				return nil, errSlowPath
			}
			s, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, errSlowPath
			}
			raw = append(raw, s)
			b = b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, errSlowPath
		}
		b = b[n:]
	}
	return raw, nil
}

// decodeSummary checks the encoded WindowSummary b: its features on the
// wire, the rest decoded and validated by wire.Decode. It returns the
// summary without its features.
func decodeSummary(b []byte) (*pb.WindowSummary, error) {
	rest := make([]byte, 0, 128)
	features := 0
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, errSlowPath
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, errSlowPath
		}
		field := b[:n+m]
		value := b[n : n+m]
		b = b[n+m:]
		if num != windowFeatures {
			rest = append(rest, field...)
			continue
		}
		if typ != protowire.BytesType {
			return nil, errSlowPath
		}
		v, _ := protowire.ConsumeBytes(value)
		if err := checkFeature(v); err != nil {
			return nil, err
		}
		if features++; features > pb.MaxSummaryFeatures {
			return nil, errSlowPath
		}
	}
	s := &pb.WindowSummary{}
	if err := wire.Decode(rest, len(rest), s); err != nil {
		return nil, errSlowPath
	}
	return s, nil
}

// checkFeature checks an encoded FeatureSummary as protobuf's decoding,
// wire.Decode's wire-type check and pb.WindowSummary.Validate would: known
// fields of the right wire type, the name valid UTF-8 of 1 to 256 bytes,
// at most maxFeatureBins bins whose sum does not overflow, min, max, mean
// and m2 finite, m2 >= 0 and min <= max once anything was counted. A
// scalar field sent twice counts as its last value, as protobuf has it.
func checkFeature(b []byte) error {
	var (
		name        []byte
		count       uint64
		stats       [4]float64 // min, max, mean, m2
		bins        int
		inBins      uint64
		binOverflow bool
	)
	addBin := func(v uint64) {
		bins++
		if inBins+v < inBins {
			binOverflow = true
		}
		inBins += v
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errSlowPath
		}
		b = b[n:]
		switch {
		case num == featureName:
			if typ != protowire.BytesType {
				return errSlowPath
			}
			v, n := protowire.ConsumeBytes(b)
			if n < 0 || !utf8.Valid(v) { // protobuf checks each occurrence
				return errSlowPath
			}
			name, b = v, b[n:]
		case num >= featureCount && num < featureMin: // count, missing, nan, pos_inf, neg_inf
			if typ != protowire.VarintType {
				return errSlowPath
			}
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errSlowPath
			}
			if num == featureCount {
				count = v
			}
			b = b[n:]
		case num >= featureMin && num <= featureM2:
			if typ != protowire.Fixed64Type {
				return errSlowPath
			}
			v, n := protowire.ConsumeFixed64(b)
			if n < 0 {
				return errSlowPath
			}
			stats[num-featureMin] = math.Float64frombits(v)
			b = b[n:]
		case num == featureBins && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return errSlowPath
			}
			addBin(v)
			b = b[n:]
		case num == featureBins && typ == protowire.BytesType: // packed
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errSlowPath
			}
			b = b[n:]
			for len(v) > 0 {
				x, m := protowire.ConsumeVarint(v)
				if m < 0 {
					return errSlowPath
				}
				addBin(x)
				v = v[m:]
			}
		case num == featureBins:
			return errSlowPath
		default: // unknown: kept, as protobuf does
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return errSlowPath
			}
			b = b[n:]
		}
		if bins > maxFeatureBins {
			return errSlowPath
		}
	}
	if len(name) == 0 || len(name) > 256 || binOverflow {
		return errSlowPath
	}
	for _, v := range stats {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return errSlowPath
		}
	}
	if min, max, m2 := stats[0], stats[1], stats[3]; m2 < 0 || (count > 0 && min > max) {
		return errSlowPath
	}
	return nil
}

// decodeFull is the path before the fast one: the whole message decoded
// and validated by wire.DecodeTopic, the summaries' bytes sliced out of
// the payload.
func decodeFull(payload []byte) (*pb.Telemetry, [][]byte, error) {
	var t pb.Telemetry
	if err := wire.DecodeTopic(topic.Telemetry, payload, &t); err != nil {
		return nil, nil, err
	}
	if err := validateEvents(t.GetEvents()); err != nil {
		return nil, nil, err
	}
	var raw [][]byte
	if s := t.GetSummaries(); s != nil {
		if r, ok := rawSummaries(payload); ok && len(r) == len(s.GetSummaries()) {
			raw = r
		}
	}
	return &t, raw, nil
}

// rejected wraps err in ErrRejected.
func rejected(err error) error { return fmt.Errorf("%w: %w", ErrRejected, err) }
