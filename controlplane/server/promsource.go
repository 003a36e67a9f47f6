package server

import (
	"context"
	"errors"
	"expvar"
	"net/http"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/promexport"
	"github.com/flotilla-edge/flotilla/controlplane/rollout"
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// promSource is the server as the /metrics exporter's Source.
type promSource struct{ s *Server }

// activePhases are the phases whose rollouts get per-rollout series; the
// finished ones are only counted, so the series do not grow with history.
var activePhases = []rollout.Phase{rollout.PhaseRunning, rollout.PhasePaused, rollout.PhaseRollingBack}

// MetricsSnapshot reads the fleet's figures: two aggregate queries, one per
// unfinished rollout, and the in-memory counters.
func (p promSource) MetricsSnapshot(ctx context.Context) (promexport.Snapshot, error) {
	s := p.s
	snap := promexport.Snapshot{MQTTClients: -1, Ingest: map[string]uint64{}, Counters: map[string]uint64{}}
	if s.broker != nil {
		snap.MQTTClients = s.broker.Stats().Clients
	}
	snap.IngestWaiting, snap.IngestCapacity = s.telemetry.in.Backlog()
	s.metrics.Do(func(kv expvar.KeyValue) {
		v, ok := counterValue(kv.Value)
		if !ok {
			return
		}
		if outcome, ok := strings.CutPrefix(kv.Key, "telemetry_"); ok {
			snap.Ingest[outcome] = v
		} else {
			snap.Counters[kv.Key] = v
		}
	})
	var errs []error
	var err error
	snap.DevicesTotal, snap.DevicesOnline, err = s.store.DeviceCounts(ctx)
	errs = append(errs, err)
	snap.RolloutPhases, err = s.store.RolloutPhaseCounts(ctx)
	errs = append(errs, err)
	for _, ph := range activePhases {
		rows, err := s.store.ListRollouts(ctx, store.RolloutFilter{Phase: string(ph), Limit: store.DefaultRolloutLimit})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, r := range rows {
			devs, err := s.store.RolloutDevicePhaseCounts(ctx, r.ID)
			errs = append(errs, err)
			snap.Rollouts = append(snap.Rollouts, promexport.Rollout{ID: r.ID, Name: r.Name, Model: r.Model,
				Release: r.Release, Phase: r.Phase, Stage: r.Stage, Devices: devs})
		}
	}
	return snap, errors.Join(errs...)
}

// counterValue reads an expvar counter: an Int, or a Func giving an
// unsigned count.
func counterValue(v expvar.Var) (uint64, bool) {
	switch v := v.(type) {
	case *expvar.Int:
		if n := v.Value(); n >= 0 {
			return uint64(n), true
		}
	case expvar.Func:
		switch n := v.Value().(type) {
		case uint64:
			return n, true
		case int64:
			if n >= 0 {
				return uint64(n), true
			}
		}
	}
	return 0, false
}

// handler is the API port's handler: /metrics for Prometheus, the rest
// the API, each request's latency observed by route.
func (s *Server) handler(inner http.Handler) http.Handler {
	s.prom = promexport.New(promSource{s}, promexport.Options{Process: true})
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.prom.Handler())
	mux.Handle("/", s.prom.Instrument(inner))
	return mux
}

// Prometheus is the exporter behind /metrics, for more collectors.
func (s *Server) Prometheus() *promexport.Exporter { return s.prom }
