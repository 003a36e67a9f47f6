package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// stepClock is a device's simulated clock.
type stepClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *stepClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *stepClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// manifestBaseline gives the device the drift baseline of the released
// digits manifest, as the agent reads it from the staged bundle.
type manifestBaseline struct{ b metrics.Baseline }

func (m manifestBaseline) Baseline(model string, rel uint64) (metrics.Baseline, bool) {
	return m.b, model == "digits" && rel == 1
}

// telemetryDevice is the device side: agent/metrics' buffer and outbox,
// publishing over a real paho connection and deleting on the control
// plane's acks.
type telemetryDevice struct {
	t      *testing.T
	id     string
	creds  *pb.EnrolResponse
	srv    *server.Server
	clk    *stepClock
	buf    *metrics.Buffer
	client paho.Client
	acked  atomic.Int64
	ackq   chan *pb.Ack // acks received, to apply
	acks   chan *pb.Ack // every ack applied, also those for other epochs
	total  uint64       // requests recorded

	mu    sync.Mutex
	first *pb.Telemetry // the first message published
}

func newTelemetryDevice(t *testing.T, srv *server.Server, admin *apiclient.Client, id string, labels map[string]string,
	clk *stepClock, bl metrics.Baseline) *telemetryDevice {
	t.Helper()
	tok, err := admin.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	d := &telemetryDevice{t: t, id: id, creds: enrol(t, srv, tok.Token, id), srv: srv, clk: clk,
		ackq: make(chan *pb.Ack, 1024), acks: make(chan *pb.Ack, 1024)}
	d.buf, err = metrics.Open(context.Background(), t.TempDir(), metrics.Options{Now: clk.Now, Window: 10 * time.Minute,
		Baselines: manifestBaseline{bl}, MaxInFlight: 8, MessagesPerSecond: 1000})
	if err != nil {
		t.Fatal(err)
	}
	d.buf.SetDevice(id)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); d.applyAcks(stop) }()
	t.Cleanup(func() { close(stop); <-done; d.buf.Close() })
	return d
}

func (d *telemetryDevice) connect() {
	d.t.Helper()
	dev, err := connect(d.t, d.srv, d.creds, d.creds.GetMqttPassword())
	if err != nil {
		d.t.Fatal(err)
	}
	d.client = dev.client
	// paho delivers messages on one goroutine, and the broker's PUBACKs
	// wait behind them: applying an ack there would wait for the outbox's
	// lock, which Drain holds while it waits for a PUBACK. So acks are
	// handed to a goroutine of their own, as the agent must.
	tok := d.client.Subscribe(topic.Default().Device(topic.Ack, d.id), 1, func(_ paho.Client, m paho.Message) {
		var a pb.Ack
		if err := wire.DecodeTopic(topic.Ack, m.Payload(), &a); err != nil {
			d.t.Errorf("ack: %v", err)
			return
		}
		d.ackq <- &a
	})
	if !tok.WaitTimeout(wait) || tok.Error() != nil {
		d.t.Fatalf("subscribe to acks: %v", tok.Error())
	}
}

// applyAcks deletes acknowledged messages from the outbox until stop.
func (d *telemetryDevice) applyAcks(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case a := <-d.ackq:
			n, err := d.buf.Ack(context.Background(), a)
			if err != nil {
				d.t.Errorf("ack: %v", err)
			}
			d.acked.Add(int64(n))
			select {
			case d.acks <- a:
			default:
			}
		}
	}
}

func (d *telemetryDevice) publish(_ context.Context, tm *pb.Telemetry) error {
	d.mu.Lock()
	if d.first == nil {
		d.first = tm
	}
	d.mu.Unlock()
	b, err := wire.Encode(tm)
	if err != nil {
		return err
	}
	tok := d.client.Publish(topic.Default().Device(topic.Telemetry, d.id), 1, false, b)
	if !tok.WaitTimeout(wait) {
		return errors.New("publish: no PUBACK in time")
	}
	return tok.Error()
}

// serve records a window's worth of inferences: pixels drawn from the
// baseline's own bins (shift false) or all at full intensity (shift true),
// then closes the windows that ended.
func (d *telemetryDevice) serve(rng *rand.Rand, base *pb.DriftBaseline, n int, shift bool) {
	for i := range n {
		feats := make([]float64, len(base.GetFeatures()))
		for j, fb := range base.GetFeatures() {
			feats[j] = 1
			if !shift {
				feats[j] = sampleBin(rng, fb)
			}
		}
		ok := i%50 != 7
		d.buf.Record(metrics.Record{Model: "digits", Release: 1, Slot: "a", At: d.clk.Now().Add(time.Duration(i) * time.Second),
			Latency: time.Duration(1+i%9) * time.Millisecond, OK: ok, Features: feats})
		d.total++
	}
	d.clk.Advance(10 * time.Minute)
	if _, err := d.buf.CloseWindows(context.Background()); err != nil {
		d.t.Fatal(err)
	}
}

// sampleBin draws a value from the baseline's histogram: a bin by its
// reference count, then a value inside it.
func sampleBin(rng *rand.Rand, fb *pb.FeatureBaseline) float64 {
	var total uint64
	for _, c := range fb.GetCounts() {
		total += c
	}
	k := rng.Uint64N(max(total, 1))
	e := fb.GetBinEdges()
	for i, c := range fb.GetCounts() {
		if k < c || i == len(fb.GetCounts())-1 {
			switch {
			case i == 0:
				return e[0] - 0.01
			case i == len(e):
				return e[len(e)-1] + 0.01
			}
			return (e[i-1] + e[i]) / 2
		}
		k -= c
	}
	return 0
}

func (d *telemetryDevice) pending() int64 {
	st, err := d.buf.Stats(context.Background())
	if err != nil {
		d.t.Fatal(err)
	}
	return st.Pending
}

// drain publishes what is due and waits for the acks to settle.
func (d *telemetryDevice) drain() int {
	n, err := d.buf.Drain(context.Background(), d.publish)
	if err != nil {
		d.t.Fatal(err)
	}
	last, stable := int64(-1), 0
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && stable < 5; time.Sleep(20 * time.Millisecond) {
		if a := d.acked.Load(); a == last {
			stable++
		} else {
			last, stable = a, 0
		}
	}
	return n
}

// TestTelemetryThroughServer: devices on the embedded broker publish window
// summaries from agent/metrics' outbox over real paho connections. One was
// offline for two hours and drains its backlog, losing its connection
// halfway (in-flight acks lost, messages resent): every summary is stored
// and counted exactly once and acknowledged. The drift API, the API client
// and flotctl answer per device, cohort and fleet, scoring against the
// released bundle's baseline: the reference-like cohort does not alert, the
// shifted one does. Rollups run on the server's timer and leave the answer
// unchanged. Device events are stored, acknowledged and listed.
func TestTelemetryThroughServer(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		Telemetry: server.TelemetryConfig{MaintainEvery: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	bs, digest := op.release(digitsSource(t, "1", nil), "1")
	_, manifest, err := bs.Manifest(digest)
	if err != nil {
		t.Fatal(err)
	}
	base := manifest.GetDrift()
	bl := metrics.BaselineFromManifest(manifest, digest)
	admin := adminClient(t, srv, dir)

	// Windows end more than an hour ago, so the hourly rollups cover them.
	t0 := time.Now().UTC().Truncate(time.Hour).Add(-5 * time.Hour)
	const windows = 12 // two hours of 10-minute windows
	rng := rand.New(rand.NewPCG(1, 2))
	offline := newTelemetryDevice(t, srv, admin, "dev-ref", map[string]string{"site": "a"}, &stepClock{t: t0}, bl)
	shifted := newTelemetryDevice(t, srv, admin, "dev-shift", map[string]string{"site": "b"}, &stepClock{t: t0}, bl)
	shifted.connect()
	for range windows {
		offline.serve(rng, base, 120, false)
		shifted.serve(rng, base, 120, true)
		shifted.drain()
	}
	if p := offline.pending(); p != windows {
		t.Fatalf("%d summaries pending after being offline, want %d", p, windows)
	}
	if p := shifted.pending(); p != 0 {
		t.Fatalf("online device: %d summaries still pending", p)
	}

	// Reconnect and drain; the connection drops with messages in flight.
	offline.connect()
	if n, err := offline.buf.Drain(context.Background(), offline.publish); n == 0 || err != nil {
		t.Fatalf("drained %d, %v", n, err)
	}
	offline.client.Disconnect(0)
	offline.connect()
	offline.clk.Advance(31 * time.Second) // past the ack timeout: unacknowledged messages go again
	for round := 0; offline.pending() > 0; round++ {
		if round > 200 {
			t.Fatalf("drain stuck with %d pending", offline.pending())
		}
		if offline.drain() == 0 {
			offline.clk.Advance(31 * time.Second)
		}
	}

	from, to := t0, t0.Add(4*time.Hour)
	query := func(o apiclient.DriftOptions) api.DriftReport {
		t.Helper()
		o.From, o.To = from, to
		rep, err := admin.Drift(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	var fleet api.DriftReport
	eventually(t, "the fleet answer from hourly rollups", func() bool {
		fleet = query(apiclient.DriftOptions{Model: "digits"})
		return fleet.RollupRows > 0 && fleet.RawSummaries == 0
	})
	if len(fleet.Releases) != 1 {
		t.Fatalf("fleet: %+v", fleet)
	}
	f := fleet.Releases[0]
	if f.Requests != offline.total+shifted.total || f.Devices != 2 || f.Windows != 2*windows || !f.Baseline || f.Version != manifest.GetVersion() {
		t.Fatalf("fleet: requests %d (devices sent %d), devices %d, windows %d, baseline %v, version %q",
			f.Requests, offline.total+shifted.total, f.Devices, f.Windows, f.Baseline, f.Version)
	}
	if want := float64(2*windows*3) / float64(f.Requests); f.ErrorRate != want || f.LatencyMs == nil ||
		f.LatencyMs.P50 < 4.9 || f.LatencyMs.P50 > 5.1 || f.LatencyMs.P99 < 8.9 || f.LatencyMs.P99 > 9.1 {
		t.Fatalf("fleet error rate %v (want %v), latency %+v", f.ErrorRate, want, f.LatencyMs)
	}
	if f.Thresholds.JS != 0.1 || f.Thresholds.PSI != 0.2 || f.Thresholds.KS != 0.15 || len(f.Features) != 64 {
		t.Fatalf("thresholds %+v, %d features", f.Thresholds, len(f.Features))
	}
	// The histograms through the API: the manifest's bins and counts, and
	// the devices' counts on them, which sum to the values they binned.
	for i, fd := range f.Features {
		h, fb := fd.Histogram, base.GetFeatures()[i]
		if h == nil || !slices.Equal(h.Edges, fb.GetBinEdges()) || !slices.Equal(h.Baseline, fb.GetCounts()) ||
			len(h.Current) != len(fb.GetCounts()) {
			t.Fatalf("feature %s histogram %+v, baseline edges %v counts %v", fd.Name, h, fb.GetBinEdges(), fb.GetCounts())
		}
		var sum uint64
		for _, c := range h.Current {
			sum += c
		}
		if sum != fd.Count+fd.PosInf+fd.NegInf || sum == 0 {
			t.Fatalf("feature %s: %d values in the bins, count %d (+inf %d, -inf %d)", fd.Name, sum, fd.Count, fd.PosInf, fd.NegInf)
		}
	}
	if p := f.Prediction; p == nil || p.Histogram == nil || len(p.Histogram.Categories) != len(base.GetPrediction().GetCategories()) {
		t.Fatalf("prediction histogram %+v", p)
	}
	rows, err := srv.Store().ListSummaries(context.Background(), store.SummaryFilter{Model: "digits", DeviceID: "dev-ref",
		FromMs: from.UnixMilli(), ToMs: to.UnixMilli()})
	if err != nil || len(rows) != windows {
		t.Fatalf("dev-ref: %d summaries stored, want %d (%v)", len(rows), windows, err)
	}

	ref := query(apiclient.DriftOptions{Model: "digits", Release: 1, Selector: "site=a"})
	shift := query(apiclient.DriftOptions{Device: "dev-shift"})
	if r := ref.Releases[0]; r.Requests != offline.total || r.Devices != 1 || r.Alert || r.Max.JS >= r.Thresholds.JS {
		t.Fatalf("reference cohort: requests %d of %d, state %s, max %+v", r.Requests, offline.total, r.State, r.Max)
	}
	if r := shift.Releases[0]; r.Requests != shifted.total || r.State != "alert" || !r.Alert || r.Max.JS <= r.Thresholds.JS {
		t.Fatalf("shifted device: requests %d of %d, state %s, max %+v", r.Requests, shifted.total, r.State, r.Max)
	}
	out := op.run("drift", "-selector", "site=b", "-model", "digits", "-release", "1", "-since", "6h", "-worst", "3")
	alerting := 0
	for _, l := range strings.Split(out, "\n") {
		if strings.HasSuffix(strings.TrimSpace(l), " alert") {
			alerting++
		}
	}
	if !strings.Contains(out, "digits release 1 ("+manifest.GetVersion()+"): ALERT") || alerting != 3 {
		t.Fatalf("flotctl drift:\n%s", out)
	}
	// One feature's text histogram: a row per bin of the baseline's edges,
	// the open-ended ones first and last, and the shifted cohort's values.
	name := f.Features[0].Name
	out = op.run("drift", "-selector", "site=b", "-model", "digits", "-release", "1", "-since", "6h", "-feature", name)
	edges := f.Features[0].Histogram.Edges
	if !strings.Contains(out, "histogram of "+name+": baseline ") || strings.Contains(out, f.Features[1].Name+" ") ||
		strings.Count(out, "█") == 0 || !strings.Contains(out, "\n< "+strconv.FormatFloat(edges[0], 'g', 4, 64)+" ") ||
		!strings.Contains(out, "\n≥ "+strconv.FormatFloat(edges[len(edges)-1], 'g', 4, 64)+" ") {
		t.Fatalf("flotctl drift -feature %s:\n%s", name, out)
	}

	// Events: stored, acknowledged, listed through the API and flotctl.
	ev := &pb.Telemetry{DeviceId: "dev-ref", Epoch: "events-1", Sequence: 1, Payload: &pb.Telemetry_Events{Events: &pb.Events{
		Events: []*pb.Event{{AtMs: time.Now().UnixMilli(), Level: "error", Code: "model.rollback", Message: "probation failed",
			Attrs: map[string]string{"model": "digits"}}}}}}
	if err := offline.publish(context.Background(), ev); err != nil {
		t.Fatal(err)
	}
	awaitAck(t, offline, "events-1", 1)
	evs, err := admin.DeviceEvents(context.Background(), "dev-ref", apiclient.EventOptions{Levels: []string{"error"}})
	if err != nil || len(evs) != 1 || evs[0].Code != "model.rollback" || evs[0].Attrs["model"] != "digits" {
		t.Fatalf("events %+v, %v", evs, err)
	}
	if out := op.run("devices", "events", "dev-ref"); !strings.Contains(out, "model.rollback") || !strings.Contains(out, "probation failed") {
		t.Fatalf("flotctl devices events:\n%s", out)
	}

	// A resend of a message long stored is acknowledged again, not stored.
	offline.mu.Lock()
	first := offline.first
	offline.mu.Unlock()
	if err := offline.publish(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	awaitAck(t, offline, first.GetEpoch(), first.GetSequence())
	if rows, _ := srv.Store().ListSummaries(context.Background(), store.SummaryFilter{Model: "digits", DeviceID: "dev-ref",
		FromMs: from.UnixMilli(), ToMs: to.UnixMilli()}); len(rows) != windows {
		t.Fatalf("after a resend: %d summaries stored, want %d", len(rows), windows)
	}

	// The server's counters agree: every message stored once.
	var m map[string]any
	if err := json.Unmarshal([]byte(srv.Metrics().String()), &m); err != nil {
		t.Fatal(err)
	}
	if m["telemetry_stored"] != float64(2*windows+1) || m["telemetry_rejected"] != float64(0) || m["telemetry_duplicates"].(float64) < 1 {
		t.Fatalf("counters %s", srv.Metrics().String())
	}
	t.Logf("stored %v, duplicates %v, acked %v", m["telemetry_stored"], m["telemetry_duplicates"], m["telemetry_acked"])
}

// awaitAck waits for the device to receive an ack naming (epoch, seq).
func awaitAck(t *testing.T, d *telemetryDevice, epoch string, seq uint64) {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case a := <-d.acks:
			if a.GetEpoch() == epoch && len(a.GetSequences()) > 0 && slices.Contains(a.GetSequences(), seq) {
				return
			}
		case <-timeout:
			t.Fatalf("no ack of %s/%d", epoch, seq)
		}
	}
}
