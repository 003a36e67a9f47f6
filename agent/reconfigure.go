package agent

import (
	"context"
	"maps"
	"time"
)

// Live is the part of the agent's configuration that changes without a
// restart (flotilla-agent applies it when its config file changes).
type Live struct {
	// HeartbeatInterval is the configured interval (0 = the default); a
	// heartbeat hint in the desired state still overrides it.
	HeartbeatInterval time.Duration
	// Labels are reported in the birth message, which is published again
	// when they change.
	Labels map[string]string
}

// Reconfigure applies l to the running agent: the serve loop re-arms its
// heartbeat and, when the labels changed, publishes a new birth. Safe to
// call from any goroutine, before or during Run.
func (a *Agent) Reconfigure(l Live) {
	if l.HeartbeatInterval <= 0 {
		l.HeartbeatInterval = DefaultHeartbeatInterval
	}
	l.Labels = cloneLabels(l.Labels)
	a.mu.Lock()
	a.live = l
	a.mu.Unlock()
	select {
	case a.reconf <- struct{}{}:
	default:
	}
}

// liveConfig is the configuration in force.
func (a *Agent) liveConfig() Live {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}

// reconfigured applies a Reconfigure on the serve loop: the heartbeat
// interval in force is worked out again (a desired-state hint still
// wins), and a change of labels is announced with a new birth.
func (s *session) reconfigured(ctx context.Context, conn Conn) {
	s.applyHints(s.hints)
	labels := s.a.liveConfig().Labels
	if maps.Equal(labels, s.labels) {
		return
	}
	if err := s.publishBirth(ctx, conn); err != nil {
		s.a.log.Warn("publish birth", "err", err)
		return
	}
	s.a.log.Info("labels announced", "labels", labels)
}
