package inferapi

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

var (
	errQueueFull    = errors.New("too many requests waiting")
	errQueueTimeout = errors.New("timed out waiting for a free slot")
)

// limiter lets a model run up to cap(slots) calls at once and queue
// maxQueue more, each for a bounded time. Models have one each, so a slow
// model only ever holds up its own callers.
type limiter struct {
	slots    chan struct{}
	waiting  atomic.Int64
	maxQueue int64
}

func (l *limiter) acquire(ctx context.Context, timeout time.Duration) error {
	select {
	case l.slots <- struct{}{}:
		return nil
	default:
	}
	if l.waiting.Add(1) > l.maxQueue {
		l.waiting.Add(-1)
		return fmt.Errorf("%w (%d)", errQueueFull, l.maxQueue)
	}
	defer l.waiting.Add(-1)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("%w after %v", errQueueTimeout, timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *limiter) release() { <-l.slots }
