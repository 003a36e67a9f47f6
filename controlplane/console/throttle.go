package console

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// Failed logins are limited per client address and per name from that
// address within throttleWindow; past either limit every login from it is
// refused (429) until its oldest failure leaves the window, without
// checking the password. Keying the name by address means a stranger
// cannot lock an operator out from elsewhere.
const (
	throttleWindow  = 15 * time.Minute
	maxFailsPerName = 5
	maxFailsPerAddr = 20
	// maxThrottleKeys bounds the memory a flood of addresses can take;
	// past it the oldest entries go first.
	maxThrottleKeys = 10000
)

type throttle struct {
	mu    sync.Mutex
	fails map[string][]time.Time // key → failure times, oldest first
}

func newThrottle() *throttle { return &throttle{fails: map[string][]time.Time{}} }

func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func throttleKeys(addr, name string) (string, string) {
	if len(name) > 64 {
		name = name[:64]
	}
	return "addr " + addr, "name " + addr + " " + name
}

// recent drops the failures of key older than the window and returns the
// rest.
func (t *throttle) recent(key string, now time.Time) []time.Time {
	fs := t.fails[key]
	i := 0
	for i < len(fs) && now.Sub(fs[i]) >= throttleWindow {
		i++
	}
	fs = fs[i:]
	if len(fs) == 0 {
		delete(t.fails, key)
	} else {
		t.fails[key] = fs
	}
	return fs
}

// allowed says whether a login of name from addr may be tried at now.
func (t *throttle) allowed(addr, name string, now time.Time) bool {
	ka, kn := throttleKeys(addr, name)
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.recent(ka, now)) < maxFailsPerAddr && len(t.recent(kn, now)) < maxFailsPerName
}

// failed records a failed login.
func (t *throttle) failed(addr, name string, now time.Time) {
	ka, kn := throttleKeys(addr, name)
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.fails) >= maxThrottleKeys {
		for k := range t.fails { // map order: an arbitrary victim is good enough
			if len(t.recent(k, now)) == 0 {
				continue
			}
			delete(t.fails, k)
			if len(t.fails) < maxThrottleKeys {
				break
			}
		}
	}
	t.fails[ka] = append(t.recent(ka, now), now)
	t.fails[kn] = append(t.recent(kn, now), now)
}
