// Package promexport serves one device agent's figures in the Prometheus
// text format, on a loopback address only: the connection state, the
// agent's event counters, the metrics buffer's depth, evictions and
// outbox backlog, each model's inference latency and errors, and its
// lifecycle state (active release, health, probation).
//
// Figures are read from the agent at scrape time (agent.Agent.Observe),
// never kept twice. Each agent gets its own registry (NewRegistry):
// nothing is registered globally, so a simulator runs thousands of agents
// in one process, each with its own.
package promexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/modelstats"
)

// DefaultAddr is where flotilla-agent serves /metrics unless told
// otherwise: loopback, next to the inference API's 8580.
const DefaultAddr = "127.0.0.1:9580"

// Observer is what the exporter reads: *agent.Agent.
type Observer interface {
	Observe(ctx context.Context) agent.Observation
}

// scrapeTimeout bounds the one query a scrape makes (the buffer's depth).
const scrapeTimeout = 5 * time.Second

// NewRegistry returns a registry holding a's collector. Add the process
// and Go collectors to it in a process that runs one agent.
func NewRegistry(a Observer) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newCollector(a))
	return reg
}

// Server serves a registry at /metrics on loopback.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen starts serving g at http://addr/metrics. addr must be a loopback
// address: the page names the device and its models, and has no
// authentication.
func Listen(addr string, g prometheus.Gatherer, log *slog.Logger) (*Server, error) {
	if err := loopbackOnly(addr); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{MaxRequestsInFlight: 2,
		Timeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}))
	s := &Server{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout: 10 * time.Second, WriteTimeout: 15 * time.Second, MaxHeaderBytes: 16 << 10}}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("metrics server stopped", "err", err)
		}
	}()
	return s, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server.
func (s *Server) Close() error { return s.srv.Close() }

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("metrics address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("metrics address %q: must be a loopback address (the page has no authentication)", addr)
	}
	return nil
}

// collector turns an Observation into metrics at scrape time.
type collector struct {
	a Observer

	info, state, events, desired                      *prometheus.Desc
	bufRecords, outbox, bufBytes, evictions, recorded *prometheus.Desc
	summaries, bufUp                                  *prometheus.Desc
	latency, errs, crashes, rollbacks                 *prometheus.Desc
	release, health, probation                        *prometheus.Desc
}

func newCollector(a Observer) *collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &collector{a: a,
		info:       d("flotilla_agent_info", "The agent's device ID (1 when known).", "device"),
		state:      d("flotilla_agent_connection_state", "1 for the agent's connection state now, 0 for the others.", "state"),
		events:     d("flotilla_agent_events_total", "Agent events since start (connects, reconnects, publishes, heartbeats, …).", "event"),
		desired:    d("flotilla_agent_desired_revision", "Revision of the accepted desired state."),
		bufRecords: d("flotilla_agent_buffer_records", "Inference records in the metrics buffer not yet summarised."),
		outbox:     d("flotilla_agent_outbox_messages", "Telemetry messages waiting to be sent or acknowledged."),
		bufBytes:   d("flotilla_agent_buffer_database_bytes", "Bytes the metrics buffer's database uses."),
		evictions:  d("flotilla_agent_buffer_evictions_total", "Rows evicted to keep the metrics buffer under its quota.", "kind"),
		recorded:   d("flotilla_agent_buffer_records_total", "Inference records offered to the buffer, by outcome.", "outcome"),
		summaries:  d("flotilla_agent_summaries_total", "Window summaries, by what happened to them.", "outcome"),
		bufUp:      d("flotilla_agent_buffer_up", "1 when the buffer's depth could be read for this scrape."),
		latency:    d("flotilla_agent_inference_duration_seconds", "Inference latency per model (the sum is estimated from the buckets, within 5%).", "model"),
		errs:       d("flotilla_agent_inference_errors_total", "Inferences that failed, per model.", "model"),
		crashes:    d("flotilla_agent_runtime_crashes_total", "Runtime plugin crashes while serving the model.", "model"),
		rollbacks:  d("flotilla_agent_rollbacks_total", "On-device rollbacks of the model.", "model"),
		release:    d("flotilla_agent_model_active_release", "The model's active release (0: none).", "model", "version"),
		health:     d("flotilla_agent_model_health", "1 for the model's health now, 0 for the others.", "model", "health"),
		probation:  d("flotilla_agent_model_probation", "1 while the model's active release is on probation.", "model"),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.info, c.state, c.events, c.desired, c.bufRecords, c.outbox,
		c.bufBytes, c.evictions, c.recorded, c.summaries, c.bufUp, c.latency, c.errs, c.crashes, c.rollbacks,
		c.release, c.health, c.probation} {
		ch <- d
	}
}

var (
	states   = []agent.State{agent.StateStopped, agent.StateEnrolling, agent.StateConnecting, agent.StateConnected}
	healths  = []lifecycle.Health{lifecycle.HealthHealthy, lifecycle.HealthProbation, lifecycle.HealthUnhealthy, lifecycle.HealthRolledBack}
	boolNums = map[bool]float64{false: 0, true: 1}
)

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	o := c.a.Observe(ctx)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	if o.Status.DeviceID != "" {
		gauge(c.info, 1, o.Status.DeviceID)
	}
	for _, st := range states {
		gauge(c.state, boolNums[o.Status.State == st], st.String())
	}
	for _, k := range slices.Sorted(maps.Keys(o.Status.Counters)) {
		if v := o.Status.Counters[k]; v >= 0 {
			counter(c.events, uint64(v), k)
		}
	}
	gauge(c.desired, float64(o.Status.DesiredRevision))

	if b := o.Buffer; b != nil {
		gauge(c.bufUp, boolNums[o.BufferErr == nil])
		if o.BufferErr == nil {
			gauge(c.bufRecords, float64(b.Records))
			gauge(c.outbox, float64(b.Pending))
			gauge(c.bufBytes, float64(b.DatabaseBytes))
		}
		counter(c.evictions, b.EvictedRecords, "records")
		counter(c.evictions, b.EvictedSummaries, "summaries")
		counter(c.recorded, b.Buffered, "buffered")
		counter(c.recorded, b.Dropped, "dropped")
		counter(c.recorded, b.Lost, "lost")
		counter(c.summaries, b.Summaries, "produced")
		counter(c.summaries, b.Coarsened, "coarsened")
		counter(c.summaries, b.Sent, "sent")
		counter(c.summaries, b.Acked, "acked")
	}

	for _, s := range o.Inference {
		h := histogram(s.Total.Latency)
		ch <- prometheus.MustNewConstHistogram(c.latency, h.count, h.sum, h.buckets, s.Name)
		counter(c.errs, s.Total.Errors, s.Name)
		counter(c.crashes, s.Crashes, s.Name)
		counter(c.rollbacks, s.Rollbacks, s.Name)
	}
	for _, m := range o.Models {
		gauge(c.release, float64(m.ActiveRelease), m.Name, m.ActiveVersion)
		for _, h := range healths {
			gauge(c.health, boolNums[m.Health == h], m.Name, h.String())
		}
		gauge(c.probation, boolNums[m.Phase == lifecycle.PhaseProbation], m.Name)
	}
}

type promHistogram struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64
}

// Exported buckets: every eighth of modelstats' (one per doubling), from
// 1 µs to about 16.8 s; slower inferences count in +Inf only.
const (
	bucketStride = 8
	lastBucket   = 24 * bucketStride
)

// histogram re-buckets a modelstats histogram (buckets 9% apart) into
// Prometheus cumulative buckets one doubling apart. modelstats keeps no
// sum, so the sum is estimated with each fine bucket's geometric middle,
// which is within half a fine bucket (about 4.4%) of each latency.
func histogram(s modelstats.HistogramSnapshot) promHistogram {
	h := promHistogram{count: s.N, buckets: make(map[float64]uint64, lastBucket/bucketStride+1)}
	var cum uint64
	for i, n := range s.Counts {
		cum += n
		if n > 0 {
			hi := modelstats.UpperBound(i).Seconds()
			h.sum += float64(n) * hi * math.Exp2(-1.0/(2*bucketStride))
		}
		if i%bucketStride == 0 && i <= lastBucket {
			h.buckets[modelstats.UpperBound(i).Seconds()] = cum
		}
	}
	return h
}
