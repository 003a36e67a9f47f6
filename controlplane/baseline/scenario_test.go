package baseline_test

import (
	"bufio"
	"context"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/baseline"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// readRows reads a CSV of floats after its header.
func readRows(t *testing.T, path string, header bool) [][]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var out [][]float64
	for first := true; sc.Scan(); first = false {
		if first && header {
			continue
		}
		var row []float64
		for _, s := range strings.Split(sc.Text(), ",") {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatal(err)
			}
			row = append(row, v)
		}
		out = append(out, row)
	}
	return out
}

func digitsBaseline(t *testing.T) *baseline.Result {
	t.Helper()
	f, err := os.Open("testdata/digits/train.csv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The model's predictions on the training split would need the runtime;
	// the labels stand in for them (the model is 97% accurate).
	res, err := baseline.FromCSV(f, baseline.Options{PredictionColumn: "label", Tensor: "pixels", WindowRecords: 100})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

type manifestBaselines struct{ b metrics.Baseline }

func (m manifestBaselines) Baseline(string, uint64) (metrics.Baseline, bool) { return m.b, true }

// TestDigitsDriftScenario serves the digits test split through the agent's
// metrics buffer (100 inferences a minute, simulated clock), scored against
// a baseline from the training split: no window alerts. Then shifted
// streams (intensity scaled, Gaussian noise, both; clipped to [0,1]): the
// Jensen-Shannon distance crosses the alert threshold within two windows.
func TestDigitsDriftScenario(t *testing.T) {
	ctx := context.Background()
	res := digitsBaseline(t)
	m := &pb.BundleManifest{Name: "digits", Release: 1, Version: "1.0", Drift: res.Drift,
		Annotations: map[string]string{summary.MinRecordsAnnotation: strconv.FormatUint(res.MinRecords, 10)}}
	bl := metrics.BaselineFromManifest(m, "")
	t.Logf("thresholds from %d reference windows of %d: %+v", res.Windows, res.MinRecords, bl.Thresholds)
	if bl.Thresholds.JS <= 0 || bl.Thresholds.JS >= 1 {
		t.Fatalf("js threshold %v", bl.Thresholds.JS)
	}
	clk := &fakeClock{t: time.UnixMilli(1_760_000_040_000)}
	buf, err := metrics.Open(ctx, t.TempDir(), metrics.Options{Now: clk.Now, Baselines: manifestBaselines{bl}})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	buf.SetDevice("dev-1")

	test := readRows(t, "testdata/digits/test.csv", true)
	expected := readRows(t, "testdata/digits/test_expected.csv", false)
	argmax := func(p []float64) float64 {
		best := 0
		for i := range p {
			if p[i] > p[best] {
				best = i
			}
		}
		return float64(best)
	}
	serve := func(pixels []float64, pred float64, hasPred bool) {
		buf.Record(metrics.Record{Model: "digits", Release: 1, Slot: "a", At: clk.Now(), Latency: time.Millisecond,
			OK: true, Features: pixels, Predicted: pred, HasPrediction: hasPred})
		clk.Advance(600 * time.Millisecond) // 100 a minute
	}
	var collected []*pb.WindowSummary
	collect := func() {
		if _, err := buf.CloseWindows(ctx); err != nil {
			t.Fatal(err)
		}
		ack := &pb.Ack{DeviceId: "dev-1", Epoch: buf.Epoch()}
		if _, err := buf.Drain(ctx, func(_ context.Context, tm *pb.Telemetry) error {
			collected = append(collected, tm.GetSummaries().GetSummaries()...)
			ack.Sequences = append(ack.Sequences, tm.GetSequence())
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := buf.Ack(ctx, ack); err != nil {
			t.Fatal(err)
		}
	}
	for i, row := range test[:400] { // four full windows
		serve(row[:64], argmax(expected[i]), true)
	}
	collect()
	if len(collected) != 4 {
		t.Fatalf("%d clean windows, want 4", len(collected))
	}
	for i, s := range collected {
		t.Logf("clean window %d: n=%d js=%.3f psi=%.3f ks=%.3f alert=%v", i, s.Requests, s.Scores.MaxJs, s.Scores.MaxPsi, s.Scores.MaxKs, s.Scores.Alert)
		if !s.Scores.Judged || s.Scores.Alert {
			t.Errorf("clean window %d alerted: %v", i, s.Scores)
		}
	}
	// Shifted streams: intensity alone, noise alone, both.
	r := rand.New(rand.NewPCG(3, 4))
	for _, shift := range []struct {
		name         string
		scale, noise float64
	}{{"intensity x0.6", 0.6, 0}, {"noise 0.15", 1, 0.15}, {"intensity x0.5 + noise 0.15", 0.5, 0.15}} {
		before := len(collected)
		for w := range 2 {
			for i := range 100 {
				row := test[(w*100+i)%len(test)]
				px := make([]float64, 64)
				for k, v := range row[:64] {
					px[k] = math.Min(1, math.Max(0, v*shift.scale+r.NormFloat64()*shift.noise))
				}
				serve(px, 0, false) // the model's answer on shifted input is not known here
			}
			collect()
		}
		alerted := -1
		for i, s := range collected[before:] {
			t.Logf("%s, window %d: js=%.3f psi=%.3f ks=%.3f alert=%v", shift.name, i, s.Scores.MaxJs, s.Scores.MaxPsi, s.Scores.MaxKs, s.Scores.Alert)
			if alerted < 0 && s.Scores.MaxJs > bl.Thresholds.JS && s.Scores.Alert {
				alerted = i
			}
		}
		if len(collected)-before != 2 || alerted < 0 {
			t.Errorf("%s: js did not cross %v within two windows", shift.name, bl.Thresholds.JS)
		}
	}
}
