package delivery

import (
	"context"
	"sync"
	"time"
)

// pacer is a token bucket of bytes: rate per second, up to burst saved.
type pacer struct {
	rate  float64 // bytes per second; <= 0: unpaced
	burst float64

	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newPacer(rate, burst int64) *pacer {
	return &pacer{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: time.Now()}
}

// take reserves n bytes, waiting until the bucket has them (it may go
// negative by one message, so a message larger than burst still passes).
func (p *pacer) take(ctx context.Context, n int) error {
	if p.rate <= 0 {
		return ctx.Err()
	}
	p.mu.Lock()
	now := time.Now()
	p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	p.tokens -= float64(n)
	wait := time.Duration(0)
	if p.tokens < 0 {
		wait = time.Duration(-p.tokens / p.rate * float64(time.Second))
	}
	p.mu.Unlock()
	if wait <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// allow takes n bytes if the bucket holds them now, without waiting.
func (p *pacer) allow(n int) bool {
	if p.rate <= 0 {
		return true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	p.tokens = min(p.burst, p.tokens+now.Sub(p.last).Seconds()*p.rate)
	p.last = now
	if p.tokens < float64(n) {
		return false
	}
	p.tokens -= float64(n)
	return true
}
