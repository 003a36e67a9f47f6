package metrics_test

import (
	"testing"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// TestBaselineMinRecords: the minimum window size comes from the drift
// baseline's field, and from the annotation for a bundle built before it.
func TestBaselineMinRecords(t *testing.T) {
	ann := map[string]string{summary.MinRecordsAnnotation: "250"}
	withField := &pb.BundleManifest{Drift: &pb.DriftBaseline{MinWindowRecords: 40}, Annotations: ann}
	older := &pb.BundleManifest{Drift: &pb.DriftBaseline{}, Annotations: ann}
	if got := metrics.BaselineFromManifest(withField, "d").MinRecords; got != 40 {
		t.Errorf("with the field: %d, want 40", got)
	}
	if got := metrics.BaselineFromManifest(older, "d").MinRecords; got != 250 {
		t.Errorf("annotation only: %d, want 250", got)
	}
}
