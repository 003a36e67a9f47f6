package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Served describes the release a model's requests go to.
type Served struct {
	Name     string
	Release  uint64
	Version  string
	Runtime  string // the runtime it runs in: "onnx", "wasm"
	Inputs   []runtime.TensorInfo
	Outputs  []runtime.TensorInfo
	Shadowed bool // on probation, with the previous release run beside it
}

// VersionLabel is the version as the inference API names it: the
// release number.
func (s Served) VersionLabel() string { return strconv.FormatUint(s.Release, 10) }

// Active describes what model name serves now; false when it serves
// nothing (unknown, never activated, or its release failed to load).
func (l *Lifecycle) Active(name string) (Served, bool) {
	e, err := l.entry(name, false)
	if err != nil {
		return Served{}, false
	}
	s := e.cur.Load()
	if s == nil {
		return Served{}, false
	}
	a := s.active
	return Served{Name: name, Release: a.release, Version: a.version, Runtime: a.rt.Name(),
		Inputs: a.inputs, Outputs: a.outputs, Shadowed: s.shadow != nil}, true
}

// Result is an inference's outputs and the release that computed them.
// When the release ran and failed, Infer returns the error with a Result
// naming that release (and no outputs), so callers can attribute the
// failure.
type Result struct {
	Outputs  []runtime.Tensor
	Release  uint64
	Version  string
	Slot     string
	Digest   string
	Manifest *pb.BundleManifest // the release's manifest; shared, read-only
}

// Infer runs model name's active release on inputs and counts the call.
// During a shadowed probation the previous release runs on a copy of the
// inputs in the background and disagreements are counted; its result is
// never returned. Invalid input (runtime.ErrInvalidInput) is the caller's
// fault and not counted as a model error. Nothing keeps inputs once Infer
// returns: the caller may reuse their buffers.
func (l *Lifecycle) Infer(ctx context.Context, name string, inputs []runtime.Tensor) (Result, error) {
	e, err := l.entry(name, false)
	if err != nil {
		return Result{}, err
	}
	for range 3 { // a switch may close the release between Load and acquire
		s := e.cur.Load()
		if s == nil {
			return Result{}, fmt.Errorf("%w: %q has no active release", ErrNotFound, name)
		}
		a := s.active
		if !a.acquire() {
			continue
		}
		start := time.Now()
		out, err := a.model.Infer(ctx, inputs)
		d := time.Since(start)
		a.release_()
		failed := err != nil && !errors.Is(err, runtime.ErrInvalidInput) && ctx.Err() == nil
		e.stats.Observe(a.release, d, failed)
		if errors.Is(err, runtime.ErrUnavailable) {
			e.noteCrashes(a.rt)
		}
		res := Result{Release: a.release, Version: a.version, Slot: a.slot, Digest: a.digest, Manifest: a.manifest}
		if err != nil {
			return res, err
		}
		if s.shadow != nil {
			l.shadowRun(e, s, inputs, out)
		}
		res.Outputs = out
		return res, nil
	}
	return Result{}, fmt.Errorf("%w: %q is switching releases", runtime.ErrUnavailable, name)
}

// shadowRun runs the incumbent on the same inputs in the background and
// compares, within the candidate's golden tolerance. Beyond the shadow
// concurrency the request is not shadowed.
func (l *Lifecycle) shadowRun(e *entry, s *serving, inputs, want []runtime.Tensor) {
	select {
	case e.shadowSem <- struct{}{}:
	default:
		return
	}
	inputs = cloneTensors(inputs) // the caller may reuse its buffers once Infer returns
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer func() { <-e.shadowSem }()
		inc := s.shadow
		if !inc.acquire() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), l.cfg.GoldenTimeout)
		start := time.Now()
		got, err := inc.model.Infer(ctx, inputs)
		cancel()
		d := time.Since(start)
		inc.release_()
		e.stats.Release(inc.release).Observe(d, err != nil)
		disagree := err == nil && compareAll(got, want, s.active.tol) != nil
		e.stats.Release(s.active.release).ObserveShadow(disagree, err != nil)
		e.stats.Total.ObserveShadow(disagree, err != nil)
	}()
}

// cloneTensors copies ts, their data and strings included.
func cloneTensors(ts []runtime.Tensor) []runtime.Tensor {
	out := make([]runtime.Tensor, len(ts))
	for i, t := range ts {
		t.Shape = slices.Clone(t.Shape)
		t.Data = slices.Clone(t.Data)
		t.Strings = slices.Clone(t.Strings)
		out[i] = t
	}
	return out
}
