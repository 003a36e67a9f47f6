// Package promexport serves the control plane's figures at /metrics in
// the Prometheus text format, through the official client library: the
// fleet (devices enrolled and online, MQTT clients), the telemetry ingest
// (messages by outcome, the queue waiting for a transaction), rollouts
// (how many in each phase; for each unfinished one its stage and its
// devices by phase) and the API's request latency by route.
//
// Fleet figures are read from the server at scrape time (a Source), never
// kept twice; API latency is observed as requests are served (Instrument).
// Every Exporter has its own registry: nothing is registered globally, so
// tests and several servers can share a process.
package promexport

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Snapshot is the fleet's figures at one scrape.
type Snapshot struct {
	DevicesTotal  int64 // enrolled, not decommissioned
	DevicesOnline int64
	// MQTTClients is the embedded broker's authenticated connections; -1
	// with an external broker (ask it instead).
	MQTTClients int64
	// IngestWaiting and IngestCapacity are the telemetry queue's length
	// and size.
	IngestWaiting, IngestCapacity int
	// Ingest counts telemetry messages by outcome ("stored", "duplicate",
	// "rejected", …) since the server started.
	Ingest map[string]uint64
	// Counters are the server's other event counters since it started,
	// by name (enrolled, auth_refused, …).
	Counters map[string]uint64
	// RolloutPhases counts rollouts by phase.
	RolloutPhases map[string]int64
	// Rollouts are the unfinished rollouts' progress.
	Rollouts []Rollout
}

// Rollout is one unfinished rollout's progress.
type Rollout struct {
	ID, Name, Model string
	Release         uint64
	Phase           string
	Stage           int
	Devices         map[string]int64 // by device phase
}

// Source reads the fleet's figures; it is called once per scrape.
type Source interface {
	MetricsSnapshot(ctx context.Context) (Snapshot, error)
}

// Options tune an Exporter; the zero value takes the defaults.
type Options struct {
	// ScrapeTimeout bounds one Source call; default 5 s.
	ScrapeTimeout time.Duration
	// Process adds the process and Go runtime collectors (RSS, CPU,
	// goroutines, GC): on for a server process, off when several
	// exporters share one (tests, simulators).
	Process bool
}

// Exporter is the control plane's /metrics.
type Exporter struct {
	reg *prometheus.Registry
	api *prometheus.HistogramVec
}

// New returns an exporter reading src at each scrape.
func New(src Source, opt Options) *Exporter {
	if opt.ScrapeTimeout <= 0 {
		opt.ScrapeTimeout = 5 * time.Second
	}
	e := &Exporter{reg: prometheus.NewRegistry()}
	e.api = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flotilla_api_request_duration_seconds",
		Help:    "API requests served, by route pattern, method and status code, with their latency.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"route", "method", "code"})
	e.reg.MustRegister(e.api, newFleetCollector(src, opt.ScrapeTimeout))
	if opt.Process {
		e.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	}
	return e
}

// Registry is the exporter's registry, for more collectors.
func (e *Exporter) Registry() *prometheus.Registry { return e.reg }

// Handler serves the registry in the Prometheus text format (or
// OpenMetrics/protobuf when the scraper asks).
func (e *Exporter) Handler() http.Handler {
	return promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{Registry: e.reg, MaxRequestsInFlight: 4,
		Timeout: 30 * time.Second})
}

// Instrument observes each request h serves. The route label is the
// http.ServeMux pattern that matched (without its method), so that
// /v1/devices/{id} is one series however many devices there are; a
// request no pattern matched counts as "unmatched".
func (e *Exporter) Instrument(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		h.ServeHTTP(rec, r)
		e.api.WithLabelValues(routeOf(r), methodOf(r.Method), strconv.Itoa(rec.code)).
			Observe(time.Since(start).Seconds())
	})
}

// routeOf is the pattern path a ServeMux matched ("GET /v1/x/{id}" →
// "/v1/x/{id}"), "unmatched" for none or the catch-all.
func routeOf(r *http.Request) string {
	p := r.Pattern
	if i := strings.IndexByte(p, ' '); i >= 0 {
		p = p[i+1:]
	}
	if p == "" || p == "/" {
		return "unmatched"
	}
	return p
}

// methodOf keeps the method label to the known methods: a client chooses
// the method, and a label must not grow with what clients send.
func methodOf(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer
// (flushes, deadlines).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// fleetCollector turns a Snapshot into metrics at scrape time.
type fleetCollector struct {
	src     Source
	timeout time.Duration

	devices, online, mqtt, ingestWaiting, ingestCap *prometheus.Desc
	ingest, events, rollouts, stage, rolloutDevices *prometheus.Desc
	up                                              *prometheus.Desc
}

func newFleetCollector(src Source, timeout time.Duration) *fleetCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &fleetCollector{src: src, timeout: timeout,
		devices:        d("flotilla_devices", "Devices enrolled and not decommissioned."),
		online:         d("flotilla_devices_online", "Devices online now."),
		mqtt:           d("flotilla_mqtt_clients", "Authenticated connections to the embedded MQTT broker."),
		ingestWaiting:  d("flotilla_telemetry_ingest_backlog", "Telemetry messages waiting for a store transaction."),
		ingestCap:      d("flotilla_telemetry_ingest_capacity", "Size of the telemetry queue; a message finding it full is dropped and resent."),
		ingest:         d("flotilla_telemetry_messages_total", "Telemetry messages taken in, by outcome.", "outcome"),
		events:         d("flotilla_server_events_total", "Control-plane events since start (enrolments, refusals, wave chunks, alerts, …).", "event"),
		rollouts:       d("flotilla_rollouts", "Rollouts by phase.", "phase"),
		stage:          d("flotilla_rollout_stage", "The stage an unfinished rollout is at (0-based).", "rollout", "name", "model", "release", "phase"),
		rolloutDevices: d("flotilla_rollout_devices", "An unfinished rollout's devices by their phase.", "rollout", "phase"),
		up:             d("flotilla_metrics_source_up", "1 when the fleet figures could be read for this scrape, 0 when not."),
	}
}

func (c *fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.devices, c.online, c.mqtt, c.ingestWaiting, c.ingestCap,
		c.ingest, c.events, c.rollouts, c.stage, c.rolloutDevices, c.up} {
		ch <- d
	}
}

func (c *fleetCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, err := c.src.MetricsSnapshot(ctx)
	up := 1.0
	if err != nil {
		// What was read is still exported; the scrape says it is partial.
		up = 0
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.up, up)
	gauge(c.devices, float64(s.DevicesTotal))
	gauge(c.online, float64(s.DevicesOnline))
	if s.MQTTClients >= 0 {
		gauge(c.mqtt, float64(s.MQTTClients))
	}
	gauge(c.ingestWaiting, float64(s.IngestWaiting))
	gauge(c.ingestCap, float64(s.IngestCapacity))
	for _, k := range sorted(s.Ingest) {
		counter(c.ingest, float64(s.Ingest[k]), k)
	}
	for _, k := range sorted(s.Counters) {
		counter(c.events, float64(s.Counters[k]), k)
	}
	for _, k := range sorted(s.RolloutPhases) {
		gauge(c.rollouts, float64(s.RolloutPhases[k]), k)
	}
	for _, r := range s.Rollouts {
		gauge(c.stage, float64(r.Stage), r.ID, r.Name, r.Model, strconv.FormatUint(r.Release, 10), r.Phase)
		for _, k := range sorted(r.Devices) {
			gauge(c.rolloutDevices, float64(r.Devices[k]), r.ID, k)
		}
	}
}

func sorted[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
