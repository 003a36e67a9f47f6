// Package modelstats holds the per-model inference counters in one place:
// requests, errors, a latency histogram (p50, p95, p99), runtime crashes,
// rollbacks and shadow disagreements. The lifecycle's probation judge, the
// diagnostics socket and telemetry all read the same numbers.
//
// Counters are kept per model and, within a model, per release (Series),
// so probation can compare a new release with the one it replaced. All
// methods are safe for concurrent use and lock-free on the request path.
package modelstats

import (
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Registry holds every model's counters.
type Registry struct {
	mu     sync.Mutex
	models map[string]*Model
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{models: map[string]*Model{}} }

// Model returns the named model's counters, creating them.
func (r *Registry) Model(name string) *Model {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.models[name]
	if !ok {
		m = &Model{name: name, releases: map[uint64]*Series{}}
		r.models[name] = m
	}
	return m
}

// Names lists the models with counters, sorted.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.models))
	for n := range r.models {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Model is one model's counters: totals across releases, and a Series per
// release.
type Model struct {
	name     string
	Total    Series
	crashes  atomic.Uint64
	rollback atomic.Uint64

	mu       sync.Mutex
	releases map[uint64]*Series
}

// Release returns the counters of one release, creating them.
func (m *Model) Release(release uint64) *Series {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.releases[release]
	if !ok {
		s = &Series{}
		m.releases[release] = s
	}
	return s
}

// Forget drops a release's series (a collected slot).
func (m *Model) Forget(release uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.releases, release)
}

// Observe records one request served by release: its latency and whether it
// failed. It feeds both the release's series and the model's totals.
func (m *Model) Observe(release uint64, d time.Duration, failed bool) {
	m.Release(release).Observe(d, failed)
	m.Total.Observe(d, failed)
}

// AddCrashes counts runtime crashes seen while the model was served.
func (m *Model) AddCrashes(n uint64) { m.crashes.Add(n) }

// AddRollback counts one rollback.
func (m *Model) AddRollback() { m.rollback.Add(1) }

// Snapshot is a model's figures at one moment.
type Snapshot struct {
	Name      string
	Total     SeriesSnapshot
	Crashes   uint64
	Rollbacks uint64
	Releases  map[uint64]SeriesSnapshot
}

// Snapshot reads the model's counters.
func (m *Model) Snapshot() Snapshot {
	s := Snapshot{Name: m.name, Total: m.Total.Snapshot(), Crashes: m.crashes.Load(), Rollbacks: m.rollback.Load(),
		Releases: map[uint64]SeriesSnapshot{}}
	m.mu.Lock()
	defer m.mu.Unlock()
	for r, ser := range m.releases {
		s.Releases[r] = ser.Snapshot()
	}
	return s
}

// Series counts requests of one release (or a model's total).
type Series struct {
	requests      atomic.Uint64
	errors        atomic.Uint64
	shadowRuns    atomic.Uint64
	disagreements atomic.Uint64
	shadowErrors  atomic.Uint64
	latency       Histogram
}

// Observe records one request.
func (s *Series) Observe(d time.Duration, failed bool) {
	s.requests.Add(1)
	if failed {
		s.errors.Add(1)
	}
	s.latency.Observe(d)
}

// ObserveShadow records one shadow comparison: whether the two releases
// disagreed, or whether the shadow call failed.
func (s *Series) ObserveShadow(disagreed, failed bool) {
	s.shadowRuns.Add(1)
	switch {
	case failed:
		s.shadowErrors.Add(1)
	case disagreed:
		s.disagreements.Add(1)
	}
}

// SeriesSnapshot is a series at one moment.
type SeriesSnapshot struct {
	Requests, Errors                        uint64
	ShadowRuns, Disagreements, ShadowErrors uint64
	P50, P95, P99                           time.Duration
	Latency                                 HistogramSnapshot
}

// ErrorRate is Errors/Requests, 0 without requests.
func (s SeriesSnapshot) ErrorRate() float64 {
	if s.Requests == 0 {
		return 0
	}
	return float64(s.Errors) / float64(s.Requests)
}

// DisagreementRate is Disagreements over the shadow runs that completed.
func (s SeriesSnapshot) DisagreementRate() float64 {
	n := s.ShadowRuns - s.ShadowErrors
	if n == 0 {
		return 0
	}
	return float64(s.Disagreements) / float64(n)
}

// Snapshot reads the series.
func (s *Series) Snapshot() SeriesSnapshot {
	h := s.latency.Snapshot()
	return SeriesSnapshot{
		Requests: s.requests.Load(), Errors: s.errors.Load(),
		ShadowRuns: s.shadowRuns.Load(), Disagreements: s.disagreements.Load(), ShadowErrors: s.shadowErrors.Load(),
		P50: h.Quantile(0.5), P95: h.Quantile(0.95), P99: h.Quantile(0.99), Latency: h,
	}
}

// The histogram's buckets grow by 2^(1/8) (about 9%) from 1 µs; the last
// bucket holds everything from about 9 minutes up.
const (
	bucketsPerDoubling = 8
	numBuckets         = 30*bucketsPerDoubling + 1
	minLatency         = time.Microsecond
)

// Histogram is a lock-free latency histogram with log-spaced buckets.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
}

func bucketOf(d time.Duration) int {
	if d <= minLatency {
		return 0
	}
	b := int(math.Ceil(math.Log2(float64(d)/float64(minLatency)) * bucketsPerDoubling))
	return min(b, numBuckets-1)
}

// UpperBound is the largest latency bucket i holds.
func UpperBound(i int) time.Duration {
	return time.Duration(float64(minLatency) * math.Exp2(float64(i)/bucketsPerDoubling))
}

// Observe adds one latency.
func (h *Histogram) Observe(d time.Duration) { h.counts[bucketOf(d)].Add(1) }

// HistogramSnapshot is a histogram's counts at one moment; Counts[i] is the
// number of latencies in (UpperBound(i-1), UpperBound(i)].
type HistogramSnapshot struct {
	Counts [numBuckets]uint64
	N      uint64
}

// Snapshot reads the histogram.
func (h *Histogram) Snapshot() HistogramSnapshot {
	var s HistogramSnapshot
	for i := range h.counts {
		s.Counts[i] = h.counts[i].Load()
		s.N += s.Counts[i]
	}
	return s
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1);
// 0 for an empty histogram. It overstates by at most one bucket (9%).
func (s HistogramSnapshot) Quantile(q float64) time.Duration {
	if s.N == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(s.N)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range s.Counts {
		if seen += c; seen >= rank {
			return UpperBound(i)
		}
	}
	return UpperBound(numBuckets - 1)
}
