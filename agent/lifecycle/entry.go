package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-edge/flotilla/agent/modelstats"
	"github.com/flotilla-edge/flotilla/agent/state"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// entry is one model: its durable record, the releases loaded, and what
// requests are served by.
type entry struct {
	name  string
	stats *modelstats.Model

	op       sync.Mutex // serialises the model's steps
	rec      state.ModelRecord
	loaded   map[string]*loaded // by slot
	prepared string             // the slot PrepareSlot handed out
	watchGen uint64             // bumped to stop a probation watcher
	crashes0 int                // runtime crash count when probation began

	snap      atomic.Pointer[State] // rec as reported, readable without op
	cur       atomic.Pointer[serving]
	crashSeen atomic.Int64 // runtime crashes already counted in stats
	shadowSem chan struct{}
}

func (l *Lifecycle) newEntry(rec state.ModelRecord) *entry {
	e := &entry{name: rec.Name, stats: l.cfg.Stats.Model(rec.Name), loaded: map[string]*loaded{},
		shadowSem: make(chan struct{}, l.cfg.ShadowConcurrency)}
	e.setRec(rec)
	return e
}

// setRec replaces the record. e.op is held (or e is not shared yet).
func (e *entry) setRec(rec state.ModelRecord) {
	e.rec = rec
	s := stateOf(rec)
	e.snap.Store(&s)
}

// loaded is one release loaded in a runtime.
type loaded struct {
	slot     string
	release  uint64
	version  string
	digest   string
	manifest *pb.BundleManifest
	model    runtime.Model
	rt       runtime.Runtime
	tol      Tolerance
	inputs   []runtime.TensorInfo
	outputs  []runtime.TensorInfo

	mu     sync.RWMutex // held shared by calls in flight; Close waits for them
	closed bool
}

// acquire holds the model for one call; false once it is closed.
func (ld *loaded) acquire() bool {
	ld.mu.RLock()
	if ld.closed {
		ld.mu.RUnlock()
		return false
	}
	return true
}

func (ld *loaded) release_() { ld.mu.RUnlock() }

// close waits for calls in flight, then unloads the model.
func (ld *loaded) close() {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	if ld.closed {
		return
	}
	ld.closed = true
	_ = ld.model.Close()
}

// serving is what requests for one model go to.
type serving struct {
	active *loaded
	shadow *loaded // the incumbent, run beside active on probation with shadow
}

// load loads the release in slot ref and describes it.
func (l *Lifecycle) load(ctx context.Context, name string, ref state.ModelSlot) (*loaded, error) {
	m, _, err := decodeManifest(ref.Manifest)
	if err != nil {
		return nil, err
	}
	mod, rt, _, err := l.loadBest(ctx, l.slotDir(name, ref.Slot), m)
	if err != nil {
		return nil, err
	}
	ld := &loaded{slot: ref.Slot, release: ref.Release, version: ref.Version, digest: ref.Digest, manifest: m,
		model: mod, rt: rt, inputs: mod.Inputs(), outputs: mod.Outputs()}
	if g := m.GetGolden(); g != nil {
		ld.tol = Tolerance{Abs: g.GetAbsTolerance(), Rel: g.GetRelTolerance()}
	}
	if len(ld.inputs) == 0 {
		ld.inputs = infosFromProto(m.GetInputs())
	}
	if len(ld.outputs) == 0 {
		ld.outputs = infosFromProto(m.GetOutputs())
	}
	return ld, nil
}

// golden runs the manifest's golden check on ld. A plugin restarting
// under it is waited for, briefly: a crash is not the model's fault unless
// it keeps happening.
func (l *Lifecycle) golden(ctx context.Context, ld *loaded) error {
	g := ld.manifest.GetGolden()
	if g == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.GoldenTimeout)
	defer cancel()
	in := fromProto(g.GetInputs())
	var out []runtime.Tensor
	var err error
	for {
		out, err = ld.model.Infer(ctx, in)
		if !errors.Is(err, runtime.ErrUnavailable) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err != nil {
		return fmt.Errorf("golden check: inference failed: %w", err)
	}
	if err := compareAll(out, fromProto(g.GetExpected()), Tolerance{Abs: g.GetAbsTolerance(), Rel: g.GetRelTolerance()}); err != nil {
		return fmt.Errorf("golden check: %w", err)
	}
	return nil
}

// noteCrashes adds the runtime's new crashes to the model's counters.
func (e *entry) noteCrashes(rt runtime.Runtime) {
	c, ok := rt.(crasher)
	if !ok {
		return
	}
	n := int64(c.Crashes())
	for {
		seen := e.crashSeen.Load()
		if n <= seen {
			return
		}
		if e.crashSeen.CompareAndSwap(seen, n) {
			e.stats.AddCrashes(uint64(n - seen))
			return
		}
	}
}
