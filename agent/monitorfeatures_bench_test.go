package agent

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// BenchmarkMonitorFunctionWriter is the cost per digits record of the
// telemetry path with and without a monitor function, each record made by
// the monitor, queued, and written by the metrics writer (SQLite, a Sync
// every 1,000 records):
//   - tensor: four features read from the input tensor on the inference
//     path (no function);
//   - function: the 256-byte input row copied on the inference path, and
//     the digits monitor function (a wazero call) computing four features
//     on the writer;
//   - call: the function's call alone (monitorfn.Function.Call).
func BenchmarkMonitorFunctionWriter(b *testing.B) {
	dir := b.TempDir()
	copyFile(b, monitorGuest(b, "digitsmon"), filepath.Join(dir, "monitor.wasm"), 0o644)
	px := make([]float64, 64)
	for i := range px {
		px[i] = float64(i%17) / 16
	}
	in := []runtime.Tensor{pixelsTensor(px)}
	feature := func(name string, tensor string, i uint32) *pb.FeatureBaseline {
		return &pb.FeatureBaseline{Name: name, Tensor: tensor, Index: i, BinEdges: []float64{0.25, 0.5}, Counts: []uint64{1, 1, 1}}
	}
	inputs := []*pb.TensorInfo{{Name: "pixels", Dtype: 1, Shape: []int64{-1, 64}}}
	manifests := map[string]*pb.BundleManifest{
		"tensor": {Name: "digits", Release: 1, Inputs: inputs, Drift: &pb.DriftBaseline{Features: []*pb.FeatureBaseline{
			feature("p0", "pixels", 0), feature("p1", "pixels", 1), feature("p2", "pixels", 2), feature("p3", "pixels", 3)}}},
		"function": {Name: "digits", Release: 1, Inputs: inputs, Monitor: &pb.MonitorFunction{File: "monitor.wasm", Export: "features"},
			Drift: &pb.DriftBaseline{Features: []*pb.FeatureBaseline{
				feature("mean", "", 0), feature("ink", "", 1), feature("cx", "", 2), feature("cy", "", 3)}}},
	}
	for _, name := range []string{"tensor", "function"} {
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			mon := newMonitor(nil, time.Now)
			mon.fnCfg = monitorfn.Config{CacheDir: monitorCache}
			mon.slotDir = func(string, string) string { return dir }
			defer mon.closeFunctions()
			buf, err := metrics.Open(ctx, b.TempDir(), metrics.Options{QuotaBytes: 1 << 30, Baselines: mon})
			if err != nil {
				b.Fatal(err)
			}
			defer buf.Close()
			res := lifecycle.Result{Release: 1, Version: "1", Slot: "a", Manifest: manifests[name]}
			// The first record loads the function; not measured.
			buf.Record(mon.record("digits", in, res, time.Now(), time.Millisecond, true))
			if err := buf.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				buf.Record(mon.record("digits", in, res, time.Now(), time.Millisecond, true))
				if n++; n%1000 == 0 {
					if err := buf.Sync(ctx); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := buf.Sync(ctx); err != nil {
				b.Fatal(err)
			}
			st, _ := buf.Stats(ctx)
			if st.Dropped > 0 || st.Lost > 0 || st.MonitorFailed > 0 || st.RawDropped > 0 {
				b.Fatalf("dropped %d lost %d failed %d raw dropped %d", st.Dropped, st.Lost, st.MonitorFailed, st.RawDropped)
			}
		})
	}
	b.Run("call", func(b *testing.B) {
		code, err := os.ReadFile(filepath.Join(dir, "monitor.wasm"))
		if err != nil {
			b.Fatal(err)
		}
		fn, err := monitorfn.Load(context.Background(), code, "features", monitorfn.Config{CacheDir: monitorCache})
		if err != nil {
			b.Fatal(err)
		}
		defer fn.Close()
		row := in[0].Data
		var out []float64
		b.ReportAllocs()
		for b.Loop() {
			if out, err = fn.AppendCall(context.Background(), out[:0], row); err != nil || len(out) != 4 {
				b.Fatal(out, err)
			}
		}
	})
}
