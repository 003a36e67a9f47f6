package metrics

import "time"

// tokenBucket paces the drain on the injected clock: rate tokens a second,
// at most burst held. A zero bucket (rate 0) allows everything.
type tokenBucket struct {
	rate, burst, tokens float64
	last                time.Time
}

func newBucket(rate, burst float64, now time.Time) tokenBucket {
	return tokenBucket{rate: rate, burst: burst, tokens: burst, last: now}
}

func (t *tokenBucket) refill(now time.Time) {
	if d := now.Sub(t.last).Seconds(); d > 0 {
		t.tokens = min(t.burst, t.tokens+d*t.rate)
	}
	t.last = now
}

// take spends n tokens if it holds them.
func (t *tokenBucket) take(n float64, now time.Time) bool {
	if t.rate == 0 {
		return true
	}
	t.refill(now)
	if t.tokens < n && t.tokens < t.burst {
		return false
	}
	// A message larger than the whole burst goes when the bucket is full,
	// leaving it in debt, so it is not stuck forever.
	t.tokens -= n
	return true
}
