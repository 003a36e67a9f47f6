// Package sim runs many simulated devices in one process: N real agents,
// each with its own data folder, device ID and identity, against a real
// control plane. It is for load and soak tests of the control plane and the
// broker; each agent speaks the full protocol.
//
// Agents start at a bounded rate (Options.RampPerSecond, 500/s by
// default), so that thousands of TLS handshakes and enrolments do not
// arrive at once on a listen backlog (somaxconn) they would overflow. The
// agents run without models (no plugin-folder or sideload watchers, no
// runtimes); instead each records RecordsPerMinute synthetic inferences
// into its real metrics buffer, which summarises them per 60 s window and
// sends the summaries through its real outbox (acknowledged, resent when
// not). Agents report the onnx and wasm runtimes (SimRuntimes) so that
// rollouts reach them; a rollout is staged as on a device without models
// (downloaded into the agent's chunk store, verified, reported staged)
// and never activated. Each agent has its own Prometheus registry (agent/promexport); Handler serves them.
//
// What differs from a device: each agent's state database, metrics buffer
// and chunk-store index are SQLite databases in memory
// (agent.Config.MemoryState: the same schemas, queries, outbox and acks,
// nothing durable across a restart), so an agent holds one open file, its
// MQTT connection, and one process runs well past 5,000 agents under a
// 20,000 open-files limit. Its data folder holds the device key, the
// bundle trust roots and, in a rollout, the downloaded chunks.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/promexport"
	"github.com/flotilla-edge/flotilla/firmware/hostfacts"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Options configure a simulation.
type Options struct {
	N             int    // number of devices
	ServerURL     string // control-plane API, for enrolment
	EnrolToken    string // must allow N enrolments
	CAFingerprint string
	CAFile        string
	MQTTURL       string // overrides the broker URL the server returns
	DataDir       string // each device gets DataDir/<device ID>
	IDPrefix      string // device IDs are IDPrefix-0000, IDPrefix-0001…; "" = "sim"
	Labels        map[string]string
	Logger        *slog.Logger

	HeartbeatInterval time.Duration // 0 = the agent's default
	// RampPerSecond is how many agents start per second; 0 =
	// DefaultRampPerSecond, < 0 = all at once.
	RampPerSecond float64
	// Online is called once, when every device is connected.
	Online func(elapsed time.Duration)
	// RecordsPerMinute is how many synthetic inferences each agent
	// records into its metrics buffer a minute, spread over the minute;
	// each agent's buffer makes one summary per window (60 s) from them
	// and sends it through its outbox. 0 = DefaultRecordsPerMinute, < 0 =
	// none (no metrics buffer).
	RecordsPerMinute int
	// Window is each agent's summary window; 0 = the agent's default
	// (60 s). Tests shorten it.
	Window time.Duration
}

// DefaultRecordsPerMinute is each agent's synthetic inferences a minute
// unless told otherwise.
const DefaultRecordsPerMinute = 6

// DefaultRampPerSecond is how fast agents start unless told otherwise.
const DefaultRampPerSecond = 500

// Run starts the devices and runs them until ctx is done. It returns nil
// after a clean shutdown, or the first error that stopped a device (which
// stops the others).
func Run(ctx context.Context, o Options) error {
	f, err := New(o)
	if err != nil {
		return err
	}
	return f.Run(ctx)
}

// Fleet is a simulation's agents, made by New and run by Run.
type Fleet struct {
	o      Options
	log    *slog.Logger
	ids    []string
	agents []*agent.Agent
	regs   map[string]*prometheus.Registry
	sim    *prometheus.Registry
}

// New makes the agents (no I/O yet) and their registries.
func New(o Options) (*Fleet, error) {
	if o.N <= 0 {
		return nil, errors.New("sim: N must be positive")
	}
	if o.DataDir == "" {
		return nil, errors.New("sim: data folder is required")
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "sim"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	facts, _ := hostfacts.Discover("/")
	if facts == nil {
		facts = &flotillapb.Facts{}
	}
	// The runtimes a device running models would report, so that the
	// control plane's preflight sends rollouts to the sim fleet; a sim
	// agent stages a bundle and never loads it.
	for _, rt := range SimRuntimes {
		facts.Runtimes = append(facts.Runtimes, &flotillapb.RuntimeInfo{Name: rt})
	}

	fl := &Fleet{o: o, log: log, regs: make(map[string]*prometheus.Registry, o.N), sim: prometheus.NewRegistry()}
	for i := range o.N {
		id := fmt.Sprintf("%s-%04d", o.IDPrefix, i)
		a, err := agent.New(agent.Config{
			DataDir:           filepath.Join(o.DataDir, id),
			DeviceID:          id,
			ServerURL:         o.ServerURL,
			EnrolToken:        o.EnrolToken,
			CAFile:            o.CAFile,
			CAFingerprint:     o.CAFingerprint,
			MQTTURL:           o.MQTTURL,
			Labels:            o.Labels,
			Version:           "sim",
			HeartbeatInterval: o.HeartbeatInterval,
			Logger:            log.With("device", id),
			Facts:             func() *flotillapb.Facts { return facts },
			MemoryState:       true,
			// Summaries through the real buffer and outbox, from
			// the synthetic inferences Run records.
			TelemetryWithoutModels: o.RecordsPerMinute >= 0,
			Telemetry:              agent.TelemetryConfig{Window: o.Window},
		})
		if err != nil {
			return nil, fmt.Errorf("sim: %w", err)
		}
		fl.ids = append(fl.ids, id)
		fl.agents = append(fl.agents, a)
		fl.regs[id] = promexport.NewRegistry(a)
	}
	fl.sim.MustRegister(stateCollector{fl}, collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector())
	return fl, nil
}

// Run starts the agents, RampPerSecond at a time, and runs them until ctx
// is done.
func (fl *Fleet) Run(ctx context.Context) error {
	o, log := fl.o, fl.log
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	rate := o.RampPerSecond
	if rate == 0 {
		rate = DefaultRampPerSecond
	}
	start := time.Now()
	var wg sync.WaitGroup
	wg.Go(func() { watchOnline(ctx, fl.agents, start, log, o.Online) })
	if n := o.RecordsPerMinute; n >= 0 {
		if n == 0 {
			n = DefaultRecordsPerMinute
		}
		wg.Go(func() { record(ctx, fl.agents, n) })
	}
	for i, a := range fl.agents {
		if rate > 0 {
			// Agent i starts i/rate seconds after the first.
			at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(at)):
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// Handler serves the simulation's metrics: /metrics the process and the
// devices by connection state (flotilla_sim_devices{state}),
// /devices/{id}/metrics one agent's own registry.
func (fl *Fleet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(fl.sim, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /devices/{id}/metrics", func(w http.ResponseWriter, r *http.Request) {
		reg, ok := fl.regs[r.PathValue("id")]
		if !ok {
			http.Error(w, "no such device", http.StatusNotFound)
			return
		}
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	})
	return mux
}

// stateCollector counts the agents by connection state at scrape time.
type stateCollector struct{ fl *Fleet }

var stateDesc = prometheus.NewDesc("flotilla_sim_devices", "Simulated devices by connection state.", []string{"state"}, nil)

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- stateDesc }

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[agent.State]int{}
	for _, a := range c.fl.agents {
		counts[a.Status().State]++
	}
	for _, st := range []agent.State{agent.StateStopped, agent.StateEnrolling, agent.StateConnecting, agent.StateConnected} {
		ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, float64(counts[st]), st.String())
	}
}

// watchOnline reports once every agent is connected.
func watchOnline(ctx context.Context, agents []*agent.Agent, start time.Time, log *slog.Logger, online func(time.Duration)) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := 0
		for _, a := range agents {
			if a.Status().State == agent.StateConnected {
				n++
			}
		}
		if n == len(agents) {
			el := time.Since(start)
			log.Info("all devices online", "devices", n, "elapsed", el.Round(time.Millisecond))
			if online != nil {
				online(el)
			}
			return
		}
	}
}

// record has every running agent record perMinute synthetic inferences a
// minute into its metrics buffer: one goroutine for the fleet, one record
// per agent a tick. About 1 % fail; latencies are 2–40 ms.
func record(ctx context.Context, agents []*agent.Agent, perMinute int) {
	t := time.NewTicker(time.Minute / time.Duration(perMinute))
	defer t.Stop()
	rng := rand.New(rand.NewPCG(1, 2))
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, a := range agents {
				rec := a.Recorder()
				if rec == nil {
					continue
				}
				rec.Record(metrics.Record{Model: SimModel, Release: 1, Version: "1", Slot: "a", At: now,
					Latency: time.Duration(2+rng.IntN(38)) * time.Millisecond, OK: rng.IntN(100) != 0})
			}
		}
	}
}

// SimRuntimes are the runtimes every sim agent reports in its facts.
var SimRuntimes = []string{"onnx", "wasm"}

// SimModel is the model the synthetic inferences are recorded under.
const SimModel = "sim-model"
