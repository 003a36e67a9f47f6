package agent

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// monitor stands between the inference API and the lifecycle: every
// inference the lifecycle runs becomes one metrics.Record (model,
// release, slot, latency, ok, the features the release's DriftBaseline
// monitors and its prediction), handed to the recorder, which only
// enqueues. It is also the buffer's Baselines (each release's manifest,
// remembered when it first served) and CounterSource (the lifecycle's
// per-model counters, as deltas per window).
type monitor struct {
	life *lifecycle.Lifecycle
	rec  metrics.Recorder
	now  func() time.Time

	// Monitor functions (monitorfeatures.go): their limits, the release's
	// slot folder they are read from, the budget of raw rows queued, and
	// where their events go.
	fnCfg   monitorfn.Config
	slotDir func(model, slot string) string
	raw     rawBudget
	event   func(level, code, msg string)

	mu        sync.Mutex
	baselines map[releaseKey]monitored
	loadedFn  map[string]*monitorFeatures // per model, the release whose function is loaded
	closed    bool                        // closeFunctions was called
	seen      map[releaseKey]counterMark  // counters already taken, per release
	seenModel map[string]modelMark        // crashes and rollbacks already taken, per model
}

type releaseKey struct {
	model   string
	release uint64
}

// monitored is a release's baseline and the plan its features are read
// by, or its monitor function.
type monitored struct {
	bl   metrics.Baseline
	plan featurePlan
	fn   *monitorFeatures // nil: features are read from tensors by plan
}

type counterMark struct{ errors, compared, disagreements uint64 }

type modelMark struct{ crashes, rollbacks uint64 }

func newMonitor(life *lifecycle.Lifecycle, now func() time.Time) *monitor {
	return &monitor{life: life, now: now, baselines: map[releaseKey]monitored{}, loadedFn: map[string]*monitorFeatures{},
		seen: map[releaseKey]counterMark{}, seenModel: map[string]modelMark{}}
}

// Names and Active are the lifecycle's (inferapi.Models).
func (m *monitor) Names() []string                             { return m.life.Names() }
func (m *monitor) Active(name string) (lifecycle.Served, bool) { return m.life.Active(name) }

// Infer runs the lifecycle's inference and records it. A request for no
// active release, or with input the runtime refused as invalid, is not a
// model's inference and is not recorded (the lifecycle does not count it
// either).
func (m *monitor) Infer(ctx context.Context, name string, inputs []runtime.Tensor) (lifecycle.Result, error) {
	at := m.now()
	start := time.Now()
	res, err := m.life.Infer(ctx, name, inputs)
	d := time.Since(start)
	if m.rec == nil || res.Release == 0 || errors.Is(err, runtime.ErrInvalidInput) || (err != nil && ctx.Err() != nil) {
		return res, err
	}
	m.rec.Record(m.record(name, inputs, res, at, d, err == nil))
	return res, err
}

// record is the record of one inference: its features read from the
// tensors, or, with a monitor function, a copy of the input row the
// metrics writer computes them from.
func (m *monitor) record(name string, inputs []runtime.Tensor, res lifecycle.Result, at time.Time, d time.Duration, ok bool) metrics.Record {
	r := metrics.Record{Model: name, Release: res.Release, Version: res.Version, Slot: res.Slot, At: at,
		Latency: d, OK: ok}
	mon := m.baseline(name, res)
	if drift := mon.bl.Drift; ok && drift != nil {
		if mon.fn != nil {
			r.Raw, r.Unsampled = mon.fn.capture(inputs)
		} else {
			r.Features, r.Missing = mon.plan.read(inputs, res.Outputs)
		}
		r.Predicted, r.HasPrediction = prediction(drift.GetPrediction(), inputs, res.Outputs)
	}
	return r
}

// baseline remembers the baseline of the release that served, so its
// windows are binned on it even after the release is unloaded.
func (m *monitor) baseline(name string, res lifecycle.Result) monitored {
	k := releaseKey{name, res.Release}
	m.mu.Lock()
	defer m.mu.Unlock()
	mon, ok := m.baselines[k]
	if !ok && res.Manifest != nil {
		mon.bl = metrics.BaselineFromManifest(res.Manifest, res.Digest)
		if res.Manifest.GetMonitor() != nil && m.slotDir != nil {
			mon.fn = newMonitorFeatures(name, res.Release, m.slotDir(name, res.Slot), res.Manifest, m.fnCfg, &m.raw, m.event)
		} else {
			mon.plan = newFeaturePlan(mon.bl.Drift.GetFeatures())
		}
		m.baselines[k] = mon
	}
	// One function per model is kept loaded: the one of the release that
	// served last. The one it replaces is unloaded once the records queued
	// for it are computed (it loads again if its release serves again,
	// after a rollback); the new one is loaded ahead of its first record,
	// off this path.
	if fn := mon.fn; fn != nil && m.loadedFn[name] != fn && !m.closed {
		if old := m.loadedFn[name]; old != nil {
			old.retire()
		}
		m.loadedFn[name] = fn
		fn.current.Store(true)
		go fn.warm()
	}
	return mon
}

// closeFunctions unloads every monitor function (the models are closing).
func (m *monitor) closeFunctions() {
	m.mu.Lock()
	m.closed = true
	var fns []*monitorFeatures
	for _, mon := range m.baselines {
		if mon.fn != nil {
			fns = append(fns, mon.fn)
		}
	}
	m.mu.Unlock()
	for _, fn := range fns {
		fn.stop()
	}
}

// Baseline implements metrics.Baselines.
func (m *monitor) Baseline(model string, release uint64) (metrics.Baseline, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mon, ok := m.baselines[releaseKey{model, release}]
	return mon.bl, ok
}

// Take implements metrics.CounterSource: what the lifecycle counted for
// the release since the previous Take — errors and shadow comparisons of
// the release, and the model's crashes and rollbacks (given to the first
// release taken after they happened).
func (m *monitor) Take(model string, release uint64) *pb.ModelCounters {
	st := m.life.Stats().Model(model)
	snap := st.Release(release).Snapshot()
	total := st.Snapshot()
	k := releaseKey{model, release}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := counterMark{errors: snap.Errors, compared: snap.ShadowRuns - snap.ShadowErrors, disagreements: snap.Disagreements}
	was := m.seen[k]
	m.seen[k] = now
	nm := modelMark{crashes: total.Crashes, rollbacks: total.Rollbacks}
	wasModel, known := m.seenModel[model]
	m.seenModel[model] = nm
	c := &pb.ModelCounters{Errors: delta(now.errors, was.errors), ShadowCompared: delta(now.compared, was.compared),
		ShadowDisagreements: delta(now.disagreements, was.disagreements)}
	if known {
		c.Crashes, c.Rollbacks = delta(nm.crashes, wasModel.crashes), delta(nm.rollbacks, wasModel.rollbacks)
	} else {
		c.Crashes, c.Rollbacks = nm.crashes, nm.rollbacks
	}
	return c
}

func delta(now, was uint64) uint64 {
	if now < was { // the series was forgotten and started again
		return now
	}
	return now - was
}

// featurePlan reads a baseline's monitored features: each from the first
// row of its tensor (an input, or else an output); one not found is
// missing. Features of the same tensor usually follow each other: the plan
// holds the runs of them, made once per release, so that an inference
// looks each tensor and its row width up once per run, comparing no names
// per feature.
type featurePlan struct {
	index []int        // each feature's element index in its tensor's row
	runs  []featureRun // consecutive features on one tensor
}

type featureRun struct {
	tensor   string
	from, to int // features [from, to)
}

func newFeaturePlan(fs []*pb.FeatureBaseline) featurePlan {
	p := featurePlan{index: make([]int, len(fs))}
	for i, fb := range fs {
		p.index[i] = int(min(fb.GetIndex(), math.MaxInt32))
		if k := len(p.runs); k > 0 && p.runs[k-1].tensor == fb.GetTensor() {
			p.runs[k-1].to = i + 1
			continue
		}
		p.runs = append(p.runs, featureRun{tensor: fb.GetTensor(), from: i, to: i + 1})
	}
	return p
}

// features reads fs by a plan made for them (see featurePlan).
func features(fs []*pb.FeatureBaseline, inputs, outputs []runtime.Tensor) ([]float64, []bool) {
	p := newFeaturePlan(fs)
	return p.read(inputs, outputs)
}

func (p *featurePlan) read(inputs, outputs []runtime.Tensor) ([]float64, []bool) {
	f := make([]float64, len(p.index))
	var missing []bool
	for _, run := range p.runs {
		t := find(run.tensor, inputs, outputs)
		width := 0
		if t != nil {
			width = rowWidth(t)
		}
		if t != nil && t.DType == runtime.Float32 && width <= len(t.Data)/4 {
			// The common case, without elementOfRow's checks per element.
			for i := run.from; i < run.to; i++ {
				if j := p.index[i]; j >= 0 && j < width {
					f[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*j:])))
					continue
				}
				if missing == nil {
					missing = make([]bool, len(f))
				}
				missing[i] = true
				f[i] = math.NaN()
			}
			continue
		}
		for i := run.from; i < run.to; i++ {
			v, ok := elementOfRow(t, width, p.index[i])
			if !ok {
				if missing == nil {
					missing = make([]bool, len(f))
				}
				missing[i] = true
				v = math.NaN()
			}
			f[i] = v
		}
	}
	return f, missing
}

// prediction reads the monitored prediction from the first row of its
// tensor: for a categorical prediction over a row of several scores, the
// index of the highest (the class); otherwise the element at its index.
func prediction(fb *pb.FeatureBaseline, inputs, outputs []runtime.Tensor) (float64, bool) {
	if fb == nil {
		return 0, false
	}
	t := find(fb.GetTensor(), outputs, inputs)
	if t == nil {
		return 0, false
	}
	if len(fb.GetCategories()) > 0 {
		if w := rowWidth(t); w > 1 {
			best, bestV := -1, math.Inf(-1)
			for j := range w {
				if v, ok := element(t, j); ok && v > bestV {
					best, bestV = j, v
				}
			}
			return float64(best), best >= 0
		}
	}
	return element(t, int(fb.GetIndex()))
}

func find(name string, first, second []runtime.Tensor) *runtime.Tensor {
	for _, ts := range [][]runtime.Tensor{first, second} {
		for i := range ts {
			if ts[i].Name == name {
				return &ts[i]
			}
		}
	}
	return nil
}

// rowWidth is the elements in one row (the first dimension is the batch).
func rowWidth(t *runtime.Tensor) int {
	w := int64(1)
	for _, d := range t.Shape[min(1, len(t.Shape)):] {
		if d <= 0 {
			return 0
		}
		w *= d
	}
	return int(min(w, math.MaxInt32))
}

// element is element i of t's first row as a float64.
func element(t *runtime.Tensor, i int) (float64, bool) {
	if t == nil {
		return 0, false
	}
	return elementOfRow(t, rowWidth(t), i)
}

// elementOfRow is element, given t's row width.
func elementOfRow(t *runtime.Tensor, width, i int) (float64, bool) {
	if t == nil || i < 0 || i >= width {
		return 0, false
	}
	size := t.DType.Size()
	if size == 0 || (i+1)*size > len(t.Data) {
		return 0, false
	}
	b := t.Data[i*size:]
	le := binary.LittleEndian
	switch t.DType {
	case runtime.Float32:
		return float64(math.Float32frombits(le.Uint32(b))), true
	case runtime.Float64:
		return math.Float64frombits(le.Uint64(b)), true
	case runtime.BFloat16:
		return float64(math.Float32frombits(uint32(le.Uint16(b)) << 16)), true
	case runtime.Int8:
		return float64(int8(b[0])), true
	case runtime.Uint8, runtime.Bool:
		return float64(b[0]), true
	case runtime.Int16:
		return float64(int16(le.Uint16(b))), true
	case runtime.Uint16:
		return float64(le.Uint16(b)), true
	case runtime.Int32:
		return float64(int32(le.Uint32(b))), true
	case runtime.Uint32:
		return float64(le.Uint32(b)), true
	case runtime.Int64:
		return float64(int64(le.Uint64(b))), true
	case runtime.Uint64:
		return float64(le.Uint64(b)), true
	}
	return 0, false // float16 and the rest: not monitored here
}
