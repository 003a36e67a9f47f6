package agent

import (
	"math/rand/v2"
	"time"
)

// Reconnect and enrolment retry backoff: full-jitter exponential, so a fleet
// that lost its broker at the same instant does not come back in lockstep.
const (
	backoffBase = time.Second
	backoffCap  = 2 * time.Minute
)

// Backoff returns how long to wait before retry number attempt (0-based):
// a uniformly random duration in [0, min(cap, base·2^attempt)] ("full
// jitter").
func Backoff(attempt int, base, cap time.Duration, r *rand.Rand) time.Duration {
	if base <= 0 || cap <= 0 {
		return 0
	}
	ceil := cap
	if attempt < 62 && base <= cap>>attempt {
		ceil = base << attempt
	}
	return time.Duration(r.Int64N(int64(ceil) + 1))
}
