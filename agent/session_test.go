package agent

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

func TestLostConnectionPublishesWillAndReconnects(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	d := newCutDialer()
	cfg.Dialer = d
	// On the fake clock the agent cannot reconnect until the test moves
	// time on, so the broker sees the connection die (and publishes the
	// will) before any new connection could take the session over.
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg.Clock = clock
	r := start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))

	mark := srv.Mark()
	d.cut()
	will := agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_OFFLINE, "lost"))
	if will.GetSession() == 0 {
		t.Errorf("will = %v", will)
	}
	if st := srv.RetainedStatus("dev-1"); st.GetState() != flotillapb.Status_STATE_OFFLINE || st.GetReason() != "lost" {
		t.Errorf("retained status = %v, want offline/lost", st)
	}
	eventually(t, "agent notices", func() bool { return r.Status().State == StateConnecting })

	// The agent comes back by itself once its backoff has passed, and says so.
	mark = srv.Mark()
	eventually(t, "backoff timer", func() bool { return clock.Waiters() > 0 })
	clock.Advance(backoffBase)
	agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-1", topic.Birth, nil)
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	if n := r.Status().Counters[CounterReconnects]; n != 1 {
		t.Errorf("%d reconnects, want 1", n)
	}
}

func TestBrokerRestart(t *testing.T) {
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg := testConfig(t, srv, "dev-1")
	cfg.Clock = clock
	r := start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))

	srv.StopBroker()
	eventually(t, "agent notices", func() bool { return r.Status().State == StateConnecting })
	// Let a few attempts fail while the broker is down.
	for range 3 {
		eventually(t, "backoff timer", func() bool { return clock.Waiters() > 0 })
		clock.Advance(backoffCap)
	}
	mark := srv.Mark()
	if err := srv.StartBroker(); err != nil {
		t.Fatal(err)
	}
	// Move time on until the agent has retried and connected.
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
				clock.Advance(backoffCap)
			}
		}
	})
	agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-1", topic.Birth, nil)
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	close(done)
	wg.Wait()
	st := r.Status()
	if st.Counters[CounterReconnects] != 1 || st.Counters[CounterConnectFailures] < 1 {
		t.Errorf("counters = %v", st.Counters)
	}
}

func TestManyAgentsOneProcess(t *testing.T) {
	t.Parallel() // beside TestSideloadAndPluginFolder, which mostly waits on a plugin process
	const n = 50
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	agents := make([]*running, n)
	for i := range n {
		cfg := testConfig(t, srv, fmt.Sprintf("sim-%03d", i))
		cfg.Clock = clock
		agents[i] = start(t, cfg)
	}
	for i := range n {
		agenttest.WaitFor[flotillapb.Status](srv, 0, fmt.Sprintf("sim-%03d", i), topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	}
	for _, a := range agents {
		eventually(t, "connected", func() bool { return a.Status().State == StateConnected })
	}
	if got := srv.Enrolments(); got != n {
		t.Errorf("%d enrolments, want %d", got, n)
	}
	// One tick of the shared fake clock makes every agent beat.
	mark := srv.Mark()
	clock.Advance(DefaultHeartbeatInterval)
	for i := range n {
		agenttest.WaitFor[flotillapb.Heartbeat](srv, mark, fmt.Sprintf("sim-%03d", i), topic.Heartbeat, nil)
	}
}

// TestReconnectReportsAgain: after a desired state was accepted, every
// new connection carries a reported state answering it, without a new
// desired state: a report lost with a dropped connection is not lost for
// good (the retained desired state the broker sends back answers nothing).
func TestReconnectReportsAgain(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	d := newCutDialer()
	cfg.Dialer = d
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg.Clock = clock
	r := start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	srv.PublishDesired(&flotillapb.DesiredState{DeviceId: "dev-1", Revision: 7})
	agenttest.WaitFor[flotillapb.ReportedState](srv, 0, "dev-1", topic.Reported, func(rs *flotillapb.ReportedState) bool { return rs.GetDesiredRevision() == 7 })

	mark := srv.Mark()
	d.cut()
	eventually(t, "agent notices", func() bool { return r.Status().State == StateConnecting })
	eventually(t, "backoff timer", func() bool { return clock.Waiters() > 0 })
	clock.Advance(backoffBase)
	rep := agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-1", topic.Reported, nil)
	if rep.GetDesiredRevision() != 7 {
		t.Fatalf("reported after reconnecting: %v, want it to answer revision 7", rep)
	}
	if n := r.Status().Counters[CounterDesiredAccepted]; n != 1 {
		t.Errorf("%d desired states accepted, want 1 (the reconnect took no new one)", n)
	}
}
