package baseline_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/baseline"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// TestMonitorBaseline: with a monitor, the feature columns are the
// function's input, in column order, and its results the features — named
// as given, then monitor.i — read from no tensor, with one value per row.
func TestMonitorBaseline(t *testing.T) {
	csv := "a,b,label\n"
	for i := range 200 {
		csv += strings.Join([]string{itoa(i % 10), itoa(i % 7), itoa(i % 3)}, ",") + "\n"
	}
	var rows int
	sumDiff := func(row []float64) ([]float64, error) {
		if len(row) != 2 {
			t.Fatalf("row of %d values", len(row))
		}
		rows++
		return []float64{row[0] + row[1], row[0] - row[1]}, nil
	}
	res, err := baseline.FromCSV(strings.NewReader(csv), baseline.Options{PredictionColumn: "label", Monitor: sumDiff,
		MonitorNames: []string{"sum"}, WindowRecords: 50})
	if err != nil {
		t.Fatal(err)
	}
	fs := res.Drift.GetFeatures()
	if rows != 200 || len(fs) != 2 || fs[0].GetName() != "sum" || fs[1].GetName() != "monitor.1" ||
		fs[0].GetTensor() != "" || fs[1].GetIndex() != 1 || res.Drift.GetPrediction() == nil {
		t.Fatalf("%d rows, features %v", rows, fs)
	}
	var n uint64
	for _, c := range fs[1].GetCounts() {
		n += c
	}
	if n != 200 || fs[1].GetBinEdges()[0] >= 0 { // a-b ranges over -6..9
		t.Errorf("difference: edges %v counts %v", fs[1].GetBinEdges(), fs[1].GetCounts())
	}
	m := &pb.BundleManifest{SchemaVersion: pb.ManifestSchemaVersion, Name: "m", Release: 1, Kind: pb.BundleKind_BUNDLE_KIND_MODEL,
		Inputs:  []*pb.TensorInfo{{Name: "x", Dtype: 1, Shape: []int64{-1, 2}}},
		Monitor: &pb.MonitorFunction{File: "f.wasm", Export: "features"}, Drift: res.Drift,
		Variants: []*pb.RuntimeVariant{{Runtime: "wasm", Entry: "f.wasm"}},
		Files:    []*pb.BundleFile{{Path: "f.wasm", Mode: 0o644, ChunkSize: pb.DefaultChunkSize, Sha256: make([]byte, 32)}}}
	if err := m.Validate(); err != nil {
		t.Errorf("the manifest with the monitor's baseline: %v", err)
	}
}

func itoa(i int) string { return string(rune('0'+i/10)) + string(rune('0'+i%10)) }

// TestMonitorBaselineRefuses: a function failing on a row, changing its
// number of results, giving none or more than names allow, or a monitor
// with a tensor, fails the baseline with ErrData.
func TestMonitorBaselineRefuses(t *testing.T) {
	csv := "a,b\n1,2\n3,4\n5,6\n"
	calls := 0
	for name, c := range map[string]struct {
		fn    baseline.Monitor
		names []string
		opt   func(*baseline.Options)
	}{
		"fails on a row": {fn: func(row []float64) ([]float64, error) {
			if row[0] == 3 {
				return nil, monitorfn.ErrFuel
			}
			return []float64{1}, nil
		}},
		"results change": {fn: func(row []float64) ([]float64, error) { calls++; return make([]float64, calls), nil }},
		"no results":     {fn: func([]float64) ([]float64, error) { return nil, nil }},
		"too many":       {fn: func([]float64) ([]float64, error) { return make([]float64, pb.MaxSummaryFeatures+1), nil }},
		"more names":     {fn: func([]float64) ([]float64, error) { return []float64{1}, nil }, names: []string{"x", "y"}},
		"with a tensor": {fn: func([]float64) ([]float64, error) { return []float64{1}, nil },
			opt: func(o *baseline.Options) { o.Tensor = "pixels" }},
	} {
		opt := baseline.Options{Monitor: c.fn, MonitorNames: c.names}
		if c.opt != nil {
			c.opt(&opt)
		}
		if _, err := baseline.FromCSV(strings.NewReader(csv), opt); !errors.Is(err, baseline.ErrData) {
			t.Errorf("%s: %v, want ErrData", name, err)
		}
	}
}

// TestMonitorFromBundleRefuses: no monitor gives none; a module not in
// the folder, a manifest without input, or a module that is not WASM are
// errors; nothing is loaded.
func TestMonitorFromBundleRefuses(t *testing.T) {
	ctx := context.Background()
	m := &pb.BundleManifest{Inputs: []*pb.TensorInfo{{Name: "x", Dtype: 1, Shape: []int64{-1, 2}}}}
	if bm, err := baseline.MonitorFromBundle(ctx, t.TempDir(), m, monitorfn.Config{}); bm != nil || err != nil {
		t.Fatalf("no monitor: %v, %v", bm, err)
	}
	m.Monitor = &pb.MonitorFunction{File: "f.wasm", Export: "features"}
	if _, err := baseline.MonitorFromBundle(ctx, t.TempDir(), m, monitorfn.Config{}); err == nil {
		t.Error("a missing module was accepted")
	}
	m.Monitor.File = "../f.wasm"
	if _, err := baseline.MonitorFromBundle(ctx, t.TempDir(), m, monitorfn.Config{}); err == nil {
		t.Error("a module outside the folder was read")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.wasm"), []byte("not wasm"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Monitor.File = "f.wasm"
	if _, err := baseline.MonitorFromBundle(ctx, dir, m, monitorfn.Config{}); !errors.Is(err, monitorfn.ErrModule) {
		t.Errorf("garbage module: %v", err)
	}
	m.Inputs = nil
	if _, err := baseline.MonitorFromBundle(ctx, dir, m, monitorfn.Config{}); err == nil {
		t.Error("a manifest without input was accepted")
	}
}
