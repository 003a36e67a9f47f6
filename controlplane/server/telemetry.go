package server

import (
	"cmp"
	"context"
	"errors"
	"expvar"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/telemetry"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// TelemetryConfig tunes the telemetry ingest and its upkeep; the zero
// value takes the defaults.
type TelemetryConfig struct {
	// MaintainEvery is how often rollups are brought up to date and
	// retention applied, on a real ticker (the times judged are Config.Now's);
	// default 5 minutes.
	MaintainEvery time.Duration
	Rollup        telemetry.RollupOptions
	Retention     telemetry.Retention // zero values: telemetry's defaults
	BatchSize     int                 // messages per store transaction; telemetry's default
	QueueSize     int                 // messages waiting for a transaction; telemetry's default
	// AckTimeout bounds the wait for the broker to take an ack; a lost ack
	// only means a resend, acknowledged as a duplicate. Default 10 s.
	AckTimeout time.Duration
}

// Default telemetry upkeep settings.
const (
	DefaultTelemetryMaintainEvery = 5 * time.Minute
	defaultAckTimeout             = 10 * time.Second
)

// telemetryService ingests the devices' telemetry from the shared
// subscription, acknowledges it after commit, keeps rollups and retention
// up to date, and is the API's api.Telemetry.
type telemetryService struct {
	s   *Server
	cfg TelemetryConfig
	in  *telemetry.Ingest

	mu        sync.Mutex
	baselines map[string]telemetry.Baseline // by manifest digest
}

var _ api.Telemetry = (*telemetryService)(nil)

func (s *Server) openTelemetry() {
	c := s.cfg.Telemetry
	c.MaintainEvery = cmp.Or(c.MaintainEvery, DefaultTelemetryMaintainEvery)
	c.AckTimeout = cmp.Or(c.AckTimeout, defaultAckTimeout)
	t := &telemetryService{s: s, cfg: c, baselines: map[string]telemetry.Baseline{}}
	t.in = telemetry.NewIngest(alertingStore{s.store, s}, t.sendAck, telemetry.Options{Scheme: s.scheme, BatchSize: c.BatchSize,
		QueueSize: c.QueueSize, Now: s.cfg.Now, Logger: s.log.With("component", "telemetry")})
	cs := &t.in.Counters
	for name, v := range map[string]interface{ Load() uint64 }{
		"telemetry_stored": &cs.Stored, "telemetry_duplicates": &cs.Duplicates, "telemetry_rejected": &cs.Rejected,
		"telemetry_empty": &cs.Ignored, "telemetry_acked": &cs.Acked, "telemetry_ack_errors": &cs.AckErrors,
		"telemetry_events": &cs.Events, "telemetry_overloaded": &cs.Overloaded,
	} {
		s.metrics.Set(name, expvar.Func(func() any { return v.Load() }))
	}
	s.telemetry = t
}

// subscription is the shared subscription replicas split the stream on.
func (t *telemetryService) subscription() string { return t.in.Subscription(controlGroup) }

// handle takes a message off the MQTT connection if it is telemetry. It
// never blocks: the connection delivers every topic's messages on one
// goroutine, and waiting there would also hold back the broker's
// acknowledgements of our own acks. A message that finds the queue full is
// dropped unacknowledged and the device resends it.
func (t *telemetryService) handle(name string, payload []byte) bool {
	if k, _, ok := t.s.scheme.Parse(name); !ok || k != topic.Telemetry {
		return false
	}
	t.in.Offer(name, payload)
	return true
}

// sendAck publishes an acknowledgement on the device's ack topic. It is
// called only after the commit.
func (t *telemetryService) sendAck(ctx context.Context, device string, a *pb.Ack) error {
	b, err := wire.Encode(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.AckTimeout)
	defer cancel()
	e := topic.MustLookup(topic.Ack)
	return t.s.mqtt.Publish(ctx, t.s.scheme.Device(topic.Ack, device), e.QoS, e.Retained, b)
}

// start runs the ingest and the upkeep until the server closes.
func (t *telemetryService) start() {
	s := t.s
	s.bg.Add(2)
	go func() {
		defer s.bg.Done()
		_ = t.in.Run(s.life)
	}()
	go func() {
		defer s.bg.Done()
		tick := time.NewTicker(t.cfg.MaintainEvery)
		defer tick.Stop()
		for {
			select {
			case <-s.life.Done():
				return
			case <-tick.C:
				if err := t.maintain(s.life); err != nil && s.life.Err() == nil {
					s.log.Warn("telemetry upkeep failed", "err", err)
				}
			}
		}
	}()
}

// maintain brings rollups up to date and applies retention, as of the
// server's clock.
func (t *telemetryService) maintain(ctx context.Context) error {
	now := t.s.cfg.Now()
	if err := telemetry.Rollup(ctx, t.s.store, now, t.cfg.Rollup); err != nil {
		return err
	}
	n, err := telemetry.Expire(ctx, t.s.store, now, t.cfg.Retention)
	if err != nil {
		return err
	}
	t.s.metrics.Add("telemetry_expired_rows", n)
	return nil
}

// Baseline implements telemetry.Baselines from the released targets and
// the bundle store: the manifest of (model, release), if it was pushed.
func (t *telemetryService) Baseline(_ context.Context, model string, rel uint64) (telemetry.Baseline, bool, error) {
	targets, err := t.s.delivery.trust.Targets()
	if errors.Is(err, registry.ErrNotFound) {
		return telemetry.Baseline{}, false, nil // no release repository yet
	}
	if err != nil {
		return telemetry.Baseline{}, false, err
	}
	digest := ""
	for _, tf := range targets {
		if c, ok := releaseCustom(tf); ok && c.Model == model && c.ReleaseCounter == rel {
			digest = targetDigest(tf)
		}
	}
	if digest == "" {
		return telemetry.Baseline{}, false, nil
	}
	t.mu.Lock()
	b, ok := t.baselines[digest]
	t.mu.Unlock()
	if ok {
		return b, true, nil
	}
	_, m, err := t.s.delivery.store.Manifest(digest)
	if errors.Is(err, bundle.ErrNotFound) {
		return telemetry.Baseline{}, false, nil
	}
	if err != nil {
		return telemetry.Baseline{}, false, err
	}
	b = telemetry.BaselineFromManifest(m)
	t.mu.Lock()
	t.baselines[digest] = b
	t.mu.Unlock()
	return b, true, nil
}

// Drift implements api.Telemetry.
func (t *telemetryService) Drift(ctx context.Context, q api.DriftQuery) (api.DriftReport, error) {
	out := api.DriftReport{From: q.From, To: q.To, Device: q.Device, Selector: q.Selector}
	f := store.SummaryFilter{Model: q.Model, Release: q.Release, DeviceID: q.Device, Selector: q.Selector,
		FromMs: q.From.UnixMilli(), ToMs: q.To.UnixMilli()}
	models := []string{q.Model}
	if q.Model == "" {
		var err error
		if models, err = t.s.store.TelemetryModels(ctx, q.Device, f.FromMs, f.ToMs); err != nil {
			return out, err
		}
	}
	for _, m := range models {
		f.Model = m
		rep, err := telemetry.DriftReport(ctx, t.s.store, t, f)
		if err != nil {
			return out, err
		}
		out.RawSummaries += rep.Raw
		out.RollupRows += rep.Rollups
		for _, r := range rep.Releases {
			out.Releases = append(out.Releases, releaseDrift(r))
		}
	}
	return out, nil
}

func releaseDrift(r telemetry.ReleaseReport) api.ReleaseDrift {
	v := api.ReleaseDrift{
		Model: r.Model, Release: r.Release, Version: r.Version, Devices: r.Devices, Windows: r.Windows,
		Requests: r.Requests, Errors: r.Errors, ErrorRate: r.ErrorRate, State: r.State, Judged: r.Judged,
		Alert: r.Alert, Warn: r.Warn, Baseline: r.Baseline, MinRecords: r.MinRecords,
		Thresholds: api.ThresholdsView{JS: r.Thresholds.JS, PSI: r.Thresholds.PSI, PSIWarn: r.Thresholds.PSIWarn, KS: r.Thresholds.KS},
		Max:        api.ScoresView{JS: r.MaxJS, PSI: r.MaxPSI, KS: r.MaxKS},
		Features:   make([]api.FeatureDrift, 0, len(r.Features)),
	}
	if r.Latency {
		v.LatencyMs = &api.LatencyView{P50: r.P50, P95: r.P95, P99: r.P99}
	}
	if c := r.Counters; c != nil {
		v.Counters = &api.CountersView{Errors: c.GetErrors(), Crashes: c.GetCrashes(), Rollbacks: c.GetRollbacks(),
			ShadowCompared: c.GetShadowCompared(), ShadowDisagreements: c.GetShadowDisagreements()}
	}
	for _, f := range r.Features {
		v.Features = append(v.Features, featureDrift(f))
	}
	if r.Prediction != nil {
		p := featureDrift(*r.Prediction)
		v.Prediction = &p
	}
	return v
}

func featureDrift(f telemetry.FeatureReport) api.FeatureDrift {
	v := api.FeatureDrift{Name: f.Name, Count: f.Count, Missing: f.Missing, NaN: f.NaN, PosInf: f.PosInf, NegInf: f.NegInf,
		Min: f.Min, Max: f.Max, Mean: f.Mean, Std: f.Std, JS: f.JS, PSI: f.PSI, KS: f.KS, Scored: f.Scored, State: f.State}
	if f.BaselineBins != nil {
		v.Histogram = &api.HistogramView{Edges: f.Edges, Categories: f.Categories, Baseline: f.BaselineBins, Current: f.Bins}
	}
	return v
}

// DeviceEvents implements api.Telemetry.
func (t *telemetryService) DeviceEvents(ctx context.Context, q api.EventQuery) ([]api.EventView, error) {
	f := store.EventFilter{DeviceID: q.Device, Levels: q.Levels, Limit: q.Limit}
	if !q.From.IsZero() {
		f.FromMs = q.From.UnixMilli()
	}
	if !q.To.IsZero() {
		f.ToMs = q.To.UnixMilli()
	}
	evs, err := t.s.store.ListEvents(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("device events: %w", err)
	}
	out := make([]api.EventView, 0, len(evs))
	for _, e := range evs {
		out = append(out, api.EventView{At: time.UnixMilli(e.AtMs).UTC(), Level: e.Level, Code: e.Code, Message: e.Message,
			Attrs: e.Attrs, ReceivedAt: time.UnixMilli(e.ReceivedAt).UTC(), Epoch: e.Epoch, Sequence: e.Sequence})
	}
	return out, nil
}
