package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// Limits on the raw inputs records carry for monitor functions: one row,
// and all rows queued for the writer together (the queue holds up to
// 65,536 records).
const (
	maxRawRow   = 1 << 20
	maxRawBytes = 16 << 20
)

// rawBudget counts the bytes of raw input rows copied and not yet
// computed, across releases.
type rawBudget struct{ used atomic.Int64 }

// take reserves n bytes; false when that would pass maxRawBytes.
func (b *rawBudget) take(n int) bool {
	if b.used.Add(int64(n)) > maxRawBytes {
		b.used.Add(-int64(n))
		return false
	}
	return true
}

func (b *rawBudget) give(n int) { b.used.Add(-int64(n)) }

// Why a record's features are missing, for metrics' counters.
var (
	errRawDropped      = errors.New("monitor: raw input not carried")
	errMonitorDisabled = errors.New("monitor: function disabled for this release")
)

// monitorFeatures is a release's monitor function as the agent runs it: a
// metrics.FeatureFunc. The inference path copies the input row (capture);
// the metrics writer calls Features, which loads the module on first need
// from the release's slot folder, runs it (runtime/wasm/monitorfn) and
// picks the baseline's features from its results. A function that runs
// out of fuel, or a module that cannot be loaded, is disabled for the
// release with an event: later records carry no input and their features
// count as missing.
type monitorFeatures struct {
	model   string
	release uint64
	path    string // the module in the slot folder
	export  string
	input   string // the input tensor it reads
	index   []int  // feature i is result index[i]
	every   uint64 // run on 1 inference in every (1: all)
	seen    atomic.Uint64
	cfg     monitorfn.Config
	budget  *rawBudget
	event   func(level, code, msg string)

	disabled atomic.Bool
	// current says the release is its model's last to serve; pending
	// counts its records queued with a RawInput. A function no longer
	// current is unloaded once its last queued record is computed.
	current atomic.Bool
	pending atomic.Int64

	mu      sync.Mutex // held by whoever loads, runs or closes fn
	fn      *monitorfn.Function
	stopped bool      // the agent is closing its models: load nothing more
	out     []float64 // results scratch
}

func newMonitorFeatures(model string, release uint64, slotDir string, m *pb.BundleManifest, cfg monitorfn.Config,
	budget *rawBudget, event func(level, code, msg string)) *monitorFeatures {
	mon := m.GetMonitor()
	mf := &monitorFeatures{model: model, release: release, path: filepath.Join(slotDir, filepath.FromSlash(mon.GetFile())),
		export: mon.GetExport(), cfg: cfg, budget: budget, event: event}
	if in := m.GetInputs(); len(in) > 0 {
		mf.input = in[0].GetName()
	}
	mf.every = max(1, uint64(mon.GetSampleEvery()))
	for _, f := range m.GetDrift().GetFeatures() {
		mf.index = append(mf.index, int(min(f.GetIndex(), math.MaxInt32)))
	}
	return mf
}

// capture is the inference path's part: the raw input for the record, a
// copy of the first row of the input tensor the function reads. Nil when
// the function is disabled or the request lacks the tensor (the record's
// features are then missing), or when the function samples and this
// inference is not one (unsampled); a RawInput without data when the row
// is over its limit or the rows queued are over theirs (counted by
// metrics).
func (mf *monitorFeatures) capture(inputs []runtime.Tensor) (raw *metrics.RawInput, unsampled bool) {
	if mf.disabled.Load() {
		return nil, false
	}
	if mf.every > 1 && (mf.seen.Add(1)-1)%mf.every != 0 {
		return nil, true
	}
	return mf.copyRow(inputs), false
}

func (mf *monitorFeatures) copyRow(inputs []runtime.Tensor) *metrics.RawInput {
	t := find(mf.input, inputs, nil)
	if t == nil {
		return nil
	}
	size := rowWidth(t) * t.DType.Size()
	if size <= 0 || size > len(t.Data) {
		return nil
	}
	mf.pending.Add(1)
	if size > maxRawRow || !mf.budget.take(size) {
		return &metrics.RawInput{Fn: mf}
	}
	return &metrics.RawInput{Data: append([]byte(nil), t.Data[:size]...), Fn: mf}
}

// Discard implements metrics.FeatureFunc.
func (mf *monitorFeatures) Discard(row []byte) {
	mf.budget.give(len(row))
	mf.done()
}

// done counts a queued record off, and unloads a function no longer
// current after its last one.
func (mf *monitorFeatures) done() {
	if mf.pending.Add(-1) == 0 && !mf.current.Load() {
		mf.unloadRetired()
	}
}

// retire marks the function no longer current (it does not block): it is
// unloaded soon if no record of its release waits, else by done after the
// last.
func (mf *monitorFeatures) retire() {
	mf.current.Store(false)
	if mf.pending.Load() == 0 {
		go mf.unloadRetired()
	}
}

// unloadRetired unloads the module unless its release became current
// again meanwhile.
func (mf *monitorFeatures) unloadRetired() {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if !mf.current.Load() && mf.fn != nil {
		mf.fn.Close()
		mf.fn = nil
	}
}

// Features implements metrics.FeatureFunc.
func (mf *monitorFeatures) Features(row []byte) ([]float64, []bool, error) {
	defer mf.done()
	mf.budget.give(len(row))
	f := make([]float64, len(mf.index))
	missing := make([]bool, len(mf.index))
	if row == nil {
		return allMissing(f, missing, errRawDropped)
	}
	return mf.features(row, f, missing)
}

func (mf *monitorFeatures) features(row []byte, f []float64, missing []bool) ([]float64, []bool, error) {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if mf.disabled.Load() {
		return allMissing(f, missing, errMonitorDisabled)
	}
	if err := mf.load(); err != nil {
		return allMissing(f, missing, err)
	}
	var err error
	mf.out, err = mf.fn.AppendCall(context.Background(), mf.out[:0], row)
	if err != nil {
		if errors.Is(err, monitorfn.ErrFuel) {
			mf.disable("warn", "monitor.disabled", err)
		}
		return allMissing(f, missing, err)
	}
	for i, j := range mf.index {
		if j < len(mf.out) && !math.IsNaN(mf.out[j]) && !math.IsInf(mf.out[j], 0) {
			f[i] = mf.out[j]
			continue
		}
		f[i], missing[i] = math.NaN(), true
	}
	return f, missing, nil
}

// load loads the module if it is not loaded; mf.mu is held.
func (mf *monitorFeatures) load() error {
	if mf.fn != nil {
		return nil
	}
	if mf.stopped {
		return monitorfn.ErrClosed
	}
	code, err := readModule(mf.path)
	if err == nil {
		mf.fn, err = monitorfn.Load(context.Background(), code, mf.export, mf.cfg)
	}
	if err != nil {
		mf.disable("error", "monitor.refused", err)
		return err
	}
	return nil
}

// warm loads the module ahead of the first record, off the inference
// path, if its release is still current.
func (mf *monitorFeatures) warm() {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	if mf.current.Load() && !mf.disabled.Load() && !mf.stopped {
		_ = mf.load()
	}
}

// stop unloads the module for good.
func (mf *monitorFeatures) stop() {
	mf.mu.Lock()
	defer mf.mu.Unlock()
	mf.stopped = true
	if mf.fn != nil {
		mf.fn.Close()
		mf.fn = nil
	}
}

// disable stops the function for the release and says so; mf.mu is held.
func (mf *monitorFeatures) disable(level, code string, err error) {
	mf.disabled.Store(true)
	if mf.fn != nil {
		mf.fn.Close()
		mf.fn = nil
	}
	if mf.event != nil {
		mf.event(level, code, fmt.Sprintf("%s release %d: monitor function %s disabled: %v", mf.model, mf.release, mf.export, err))
	}
}

// readModule reads the module file, refusing one over monitorfn's
// default module limit (Load checks the configured one).
func readModule(path string) ([]byte, error) {
	const limit = 16 << 20
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err == nil && len(b) > limit {
		err = fmt.Errorf("%w: %s is over %d bytes", monitorfn.ErrTooLarge, path, limit)
	}
	return b, err
}

func allMissing(f []float64, missing []bool, err error) ([]float64, []bool, error) {
	for i := range f {
		f[i], missing[i] = math.NaN(), true
	}
	return f, missing, err
}
