package summary

import (
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// FuzzMerge decodes two hostile summaries as the control plane does and
// merges and scores them: no panic, no unbounded allocation, inputs
// untouched, and a merge that succeeds adds the request counts.
func FuzzMerge(f *testing.F) {
	b := testBaseline()
	s1, _ := wire.Encode(summarise(b, 1, 2, []Record{{LatencyMs: 3, OK: true, Features: []float64{0.2, 0}}}))
	s2, _ := wire.Encode(summarise(b, 2, 3, []Record{{LatencyMs: 300, OK: false}}))
	f.Add(s1, s2)
	f.Add(s1, []byte{0x5a, 0x03, 0x10, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, x, y []byte) {
		var a, c pb.WindowSummary
		if wire.Decode(x, 1<<20, &a) != nil || wire.Decode(y, 1<<20, &c) != nil {
			return
		}
		if a.Validate() != nil || c.Validate() != nil {
			return
		}
		ca, cc := proto.Clone(&a), proto.Clone(&c)
		m, err := Merge(&a, &c)
		if !proto.Equal(ca, &a) || !proto.Equal(cc, &c) {
			t.Fatal("merge modified an input")
		}
		if err != nil {
			return
		}
		if m.Requests != a.Requests+c.Requests {
			t.Fatalf("requests %d, want %d", m.Requests, a.Requests+c.Requests)
		}
		Score(b, m, EffectiveThresholds(nil, nil), 1)
		Quantile(m.Latency, 0.95)
	})
}
