package wasm

import "context"

// pool holds a model's idle instances and bounds how many exist.
type pool struct {
	idle  chan *instance
	slots chan struct{} // one token per live instance
}

func newPool(n int) *pool {
	return &pool{idle: make(chan *instance, n), slots: make(chan struct{}, n)}
}

// get returns an idle instance, or nil with a reserved slot for a new one,
// waiting while all instances are busy.
func (p *pool) get(ctx context.Context) (*instance, error) {
	select {
	case in := <-p.idle:
		return in, nil
	default:
	}
	select {
	case in := <-p.idle:
		return in, nil
	case p.slots <- struct{}{}:
		return nil, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// release gives back the slot of an instance that is gone.
func (p *pool) release() { <-p.slots }

// add puts a new instance in the idle set, taking its slot.
func (p *pool) add(in *instance) {
	p.slots <- struct{}{}
	p.idle <- in
}

// put returns an instance to the idle set.
func (p *pool) put(in *instance) { p.idle <- in }

// drain closes every idle instance.
func (p *pool) drain(ctx context.Context) {
	for {
		select {
		case in := <-p.idle:
			in.close(ctx)
			p.release()
		default:
			return
		}
	}
}
