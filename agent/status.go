package agent

import (
	"expvar"
	"time"
)

// State is where the agent's connection stands.
type State int

// The agent's connection states.
const (
	StateStopped    State = iota // Run is not running
	StateEnrolling               // getting credentials from the control plane
	StateConnecting              // dialling the broker, or waiting to retry
	StateConnected               // serving
)

func (s State) String() string {
	switch s {
	case StateStopped:
		return "stopped"
	case StateEnrolling:
		return "enrolling"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	}
	return "unknown"
}

// Counter names in Config.Metrics.
const (
	CounterConnects        = "connects"           // successful broker connections
	CounterReconnects      = "reconnects"         // connections lost and retried
	CounterConnectFailures = "connect_failures"   // failed dials
	CounterEnrolAttempts   = "enrol_attempts"     // enrolment requests sent
	CounterPublished       = "published"          // messages published
	CounterPublishErrors   = "publish_errors"     // publishes that failed
	CounterReceived        = "received"           // inbound messages
	CounterMalformed       = "malformed_messages" // inbound dropped: malformed, wrong device, unknown topic
	CounterInboundDropped  = "inbound_dropped"    // inbound dropped: queue full
	CounterDesiredAccepted = "desired_accepted"   // desired states stored
	CounterDesiredStale    = "desired_stale"      // desired states with a revision below the accepted one
	CounterCommands        = "commands"           // commands answered
	CounterCommandsExpired = "commands_expired"   // commands ignored as expired
	CounterAcks            = "acks"               // telemetry acknowledgements received
	CounterHeartbeats      = "heartbeats"         // heartbeats sent
)

var counterNames = []string{
	CounterConnects, CounterReconnects, CounterConnectFailures, CounterEnrolAttempts,
	CounterPublished, CounterPublishErrors, CounterReceived, CounterMalformed,
	CounterInboundDropped, CounterDesiredAccepted, CounterDesiredStale, CounterCommands,
	CounterCommandsExpired, CounterAcks, CounterHeartbeats,
	CounterStaged, CounterStageRefused, CounterReleaseUpdates,
}

// Status is a snapshot of the agent for diagnostics.
type Status struct {
	DeviceID        string
	State           State
	Session         uint64
	ConnectedSince  time.Time // zero unless connected
	LastContact     time.Time // last message sent to or received from the broker
	LastError       string    // the last connection or enrolment error
	DesiredRevision uint64    // the accepted desired state's revision
	Counters        map[string]int64
}

// Status returns a snapshot of the agent's state and counters.
func (a *Agent) Status() Status {
	a.mu.Lock()
	s := a.status
	a.mu.Unlock()
	s.Counters = make(map[string]int64, len(counterNames))
	a.metrics.Do(func(kv expvar.KeyValue) {
		if v, ok := kv.Value.(*expvar.Int); ok {
			s.Counters[kv.Key] = v.Value()
		}
	})
	return s
}

func (a *Agent) count(name string) { a.metrics.Add(name, 1) }

func (a *Agent) counter(name string) uint64 {
	if v, ok := a.metrics.Get(name).(*expvar.Int); ok {
		return uint64(v.Value())
	}
	return 0
}

func (a *Agent) setState(st State) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status.State = st
	if st == StateConnected {
		a.status.ConnectedSince = a.clock.Now()
	} else {
		a.status.ConnectedSince = time.Time{}
	}
}

func (a *Agent) update(fn func(s *Status)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	fn(&a.status)
}

func (a *Agent) contact() {
	now := a.clock.Now()
	a.update(func(s *Status) { s.LastContact = now })
}
