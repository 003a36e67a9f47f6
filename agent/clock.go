package agent

import "time"

// Clock is the agent's source of time, injected so that tests and the
// simulator can run many agents on a fake clock. Timers (heartbeat, backoff,
// command expiry) all go through it.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

// realClock is the wall clock.
type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
