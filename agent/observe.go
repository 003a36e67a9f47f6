package agent

import (
	"context"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/modelstats"
)

// Observation is the agent's figures at one moment, as its metrics
// exporter (agent/promexport) reads them at each scrape.
type Observation struct {
	Status Status
	// Buffer is the metrics buffer's counters and depth; nil without
	// one (no models, no Config.TelemetryWithoutModels) or while Run is
	// not running. BufferErr says why the depth
	// could not be read (the counters still are).
	Buffer    *metrics.Stats
	BufferErr error
	// Models are each model's lifecycle state (active release, health,
	// probation phase), sorted by name.
	Models []lifecycle.State
	// Inference are each model's request counters and latency histogram.
	Inference []modelstats.Snapshot
}

// Observe reads the agent's figures. It is cheap (one aggregate query on
// the metrics buffer) and safe to call at any time from any goroutine.
func (a *Agent) Observe(ctx context.Context) Observation {
	o := Observation{Status: a.Status()}
	a.mu.Lock()
	m, tele := a.mods, a.tele
	a.mu.Unlock()
	if tele != nil {
		st, err := tele.Stats(ctx)
		o.Buffer, o.BufferErr = &st, err
	}
	if m == nil {
		return o
	}
	o.Models = m.life.States()
	reg := m.life.Stats()
	for _, n := range reg.Names() {
		o.Inference = append(o.Inference, reg.Model(n).Snapshot())
	}
	if m.buf != nil {
		st, err := m.buf.Stats(ctx)
		o.Buffer, o.BufferErr = &st, err
	}
	return o
}
