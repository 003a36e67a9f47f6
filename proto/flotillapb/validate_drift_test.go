package flotillapb

import (
	"strings"
	"testing"
)

// TestDriftMinWindowRecords: the minimum window size is optional and
// bounded.
func TestDriftMinWindowRecords(t *testing.T) {
	for n, ok := range map[uint32]bool{0: true, 1: true, MaxMinWindowRecords: true, MaxMinWindowRecords + 1: false, 1 << 31: false} {
		err := (&DriftBaseline{MinWindowRecords: n}).validate()
		if ok != (err == nil) {
			t.Errorf("min_window_records %d: %v", n, err)
		}
		if err != nil && !strings.Contains(err.Error(), "min_window_records") {
			t.Errorf("min_window_records %d: error %q does not name the field", n, err)
		}
	}
}
