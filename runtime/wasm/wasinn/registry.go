package wasinn

import (
	"context"
	"errors"
	"os"
	"sync"

	"github.com/flotilla-edge/flotilla/runtime"
)

// registry shares the graphs loaded by name among a model's instances.
type registry struct {
	backend runtime.Runtime
	mu      sync.Mutex
	byKey   map[string]*graph
}

func newRegistry(backend runtime.Runtime) *registry {
	return &registry{backend: backend, byKey: map[string]*graph{}}
}

// graph is a backend model and how to load it again.
type graph struct {
	reg  *registry
	key  string // "" for graphs loaded from bytes: never shared
	spec runtime.LoadSpec
	tmp  string // a folder to remove when the graph goes

	mu    sync.Mutex
	model runtime.Model
	refs  int
}

// open returns the shared graph for key, loading it on first use.
func (r *registry) open(ctx context.Context, key string, spec runtime.LoadSpec) (*graph, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if g, ok := r.byKey[key]; ok && key != "" {
		g.refs++
		return g, nil
	}
	m, err := r.backend.Load(ctx, spec)
	if err != nil {
		return nil, err
	}
	g := &graph{reg: r, key: key, spec: spec, model: m, refs: 1}
	if key != "" {
		r.byKey[key] = g
	}
	return g, nil
}

// release drops a reference; the last one closes the model.
func (g *graph) release() {
	r := g.reg
	r.mu.Lock()
	g.refs--
	last := g.refs == 0
	if last && g.key != "" {
		delete(r.byKey, g.key)
	}
	r.mu.Unlock()
	if last {
		g.mu.Lock()
		g.model.Close()
		g.mu.Unlock()
		if g.tmp != "" {
			os.RemoveAll(g.tmp)
		}
	}
}

func (g *graph) current() runtime.Model {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.model
}

// infer runs the model; after runtime.ErrUnavailable it re-creates the
// model once (unless another call already did) and retries.
func (g *graph) infer(ctx context.Context, in []runtime.Tensor) ([]runtime.Tensor, error) {
	m := g.current()
	out, err := m.Infer(ctx, in)
	if !errors.Is(err, runtime.ErrUnavailable) {
		return out, err
	}
	if m, err = g.recreate(ctx, m); err != nil {
		return nil, err
	}
	return m.Infer(ctx, in)
}

func (g *graph) recreate(ctx context.Context, failed runtime.Model) (runtime.Model, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.model != failed {
		return g.model, nil
	}
	m, err := g.reg.backend.Load(ctx, g.spec)
	if err != nil {
		return nil, err
	}
	failed.Close()
	g.model = m
	return m, nil
}
