package server_test

import (
	"bytes"
	"context"
	"expvar"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestReplicaSummariesMosquitto is the telemetry half of issue 11's
// failover: real agents summarise synthetic inferences in short windows
// and send the summaries through Mosquitto (dynamic security) to two
// control-plane replicas that split the stream through the shared
// subscription and share one PostgreSQL database. Mid-stream one replica
// goes — stopped, or cut off from the database and then from the broker
// with no shutdown at all, holding summaries it could not commit — while
// the agents go on recording. At the end every (device, epoch, sequence)
// an agent made is stored exactly once, with no gap; the control plane's
// request totals equal the agents'; every agent's outbox is empty, each
// message acknowledged once committed; and after the failover each
// message is sent once, none dealt to the replica that went.
func TestReplicaSummariesMosquitto(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill func(r *summaryReplica, agents []*summaryAgent)
		// held: the replica went holding messages it had not committed,
		// so some were sent again (to the survivor).
		held bool
	}{
		{"stopped", func(r *summaryReplica, _ []*summaryAgent) { r.srv.Close() }, false},
		// The replica's process lives on, its database pool and then its
		// broker connection cut under it: nothing it held is handed back.
		{"cut", func(r *summaryReplica, agents []*summaryAgent) {
			r.db.sever()
			// Wait for a window begun after the cut and unacknowledged a
			// second after it closed: sent after the cut and dealt to the
			// cut replica, which cannot commit it. (Should it be
			// acknowledged all the same, the store's count says so below.)
			cut := time.Now()
			held := func() bool {
				for _, ag := range agents {
					st := ag.stats()
					if from := st.OldestPendingFrom; from.After(cut) && time.Since(from) > summaryWindow+time.Second {
						return true
					}
				}
				return false
			}
			for deadline := time.Now().Add(10 * time.Second); !held() && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			r.mqtt.sever()
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) { replicaSummaries(t, tc.kill, tc.held) })
	}
}

// summaryReplica is a control-plane replica that reaches the broker and
// the database through links the test can sever.
type summaryReplica struct {
	srv  *server.Server
	mqtt *link
	db   *link
}

// Agents, windows and pacing for replicaSummaries: four devices each
// recording an inference every 10 ms in 250 ms windows. A message not
// acknowledged within summaryAckWait is sent again: long enough that no
// ack of a live replica comes later, short enough for a quick test.
const (
	summaryDevices = 4
	summaryWindow  = 250 * time.Millisecond
	summaryAckWait = 2 * time.Second
)

func replicaSummaries(t *testing.T, kill func(*summaryReplica, []*summaryAgent), held bool) {
	shared := newSharedServices(t)
	b, dsn := shared.b, shared.dsn
	start := func(dir string) *summaryReplica {
		t.Helper()
		r := &summaryReplica{mqtt: startLink(t, hostPort(t, b.URL())), db: startLink(t, hostPort(t, dsn))}
		cfg := shared.config(t, dir)
		cfg.Database, cfg.MQTTURL, cfg.PublicMQTTURL = withHost(t, dsn, r.db.addr()), withHost(t, b.URL(), r.mqtt.addr()), b.URL()
		cfg.Listen, cfg.WaveDelay = "127.0.0.1:0", 0
		r.srv = shared.start(t, cfg)
		return r
	}
	dirA := t.TempDir()
	a := start(dirA)
	var archive bytes.Buffer
	if _, err := backup.Create(context.Background(), &archive, dirA, backup.Options{}); err != nil {
		t.Fatal(err)
	}
	dirB := filepath.Join(t.TempDir(), "b")
	if _, err := backup.Restore(bytes.NewReader(archive.Bytes()), dirB, backup.Limits{}); err != nil {
		t.Fatal(err)
	}
	other := start(dirB)
	c := adminClient(t, other.srv, dirA) // the token is in the shared database

	agents := make([]*summaryAgent, summaryDevices)
	for i := range agents {
		id := fmt.Sprintf("dev-s%d", i)
		et, err := c.CreateEnrolToken(context.Background(), api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = startSummaryAgent(t, other.srv, id, et.Token)
	}

	// The agents record while both replicas split the stream, and go on
	// recording as one replica goes.
	stop := recordAll(t, agents)
	within(t, 30*time.Second, "summaries stored by both replicas", func() bool {
		return metric(a.srv, "telemetry_stored") >= 2 && metric(other.srv, "telemetry_stored") >= 2
	})
	kill(a, agents)
	time.Sleep(time.Second)
	stop()
	// Every window closes and every message is acknowledged: by the
	// survivor, or by the replica that went if it committed in time (what
	// it held uncommitted is sent again after the ack timeout).
	awaitDrained(t, agents)

	// From now on the survivor takes the whole stream: each message is
	// sent once and acknowledged, none sent into the session of the
	// replica that went.
	sent0, acked0 := make([]uint64, len(agents)), make([]uint64, len(agents))
	for i, ag := range agents {
		st := ag.stats()
		sent0[i], acked0[i] = st.Sent, st.Acked
	}
	stop = recordAll(t, agents)
	time.Sleep(time.Second)
	stop()
	awaitDrained(t, agents)
	for i, ag := range agents {
		st := ag.stats()
		if sent, acked := st.Sent-sent0[i], st.Acked-acked0[i]; sent != acked || acked == 0 {
			t.Errorf("%s after the failover: %d messages sent for %d acknowledged", ag.id, sent, acked)
		}
	}

	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var want, resent uint64
	for _, ag := range agents {
		st := ag.stats()
		if st.Dropped != 0 || st.Lost != 0 || st.Coarsened != 0 || st.EvictedSummaries != 0 || st.EvictedRecords != 0 {
			t.Fatalf("%s lost records or messages on its side: %+v", ag.id, st)
		}
		// One model, one release: one summary a message, sequences 1..n.
		n := int64(st.Acked)
		if st.Summaries != st.Acked {
			t.Errorf("%s: %d summaries made, %d messages acknowledged", ag.id, st.Summaries, st.Acked)
		}
		var epochs, msgs, distinct, lo, hi, rows, requests int64
		if err := conn.QueryRow(context.Background(), `SELECT COUNT(DISTINCT epoch), COUNT(*), COUNT(DISTINCT sequence),
			COALESCE(MIN(sequence), 0), COALESCE(MAX(sequence), 0) FROM telemetry_received WHERE device_id = $1`,
			ag.id).Scan(&epochs, &msgs, &distinct, &lo, &hi); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRow(context.Background(), `SELECT COUNT(*), COALESCE(SUM(requests), 0)
			FROM telemetry_summaries WHERE device_id = $1`, ag.id).Scan(&rows, &requests); err != nil {
			t.Fatal(err)
		}
		if epochs != 1 || msgs != n || distinct != n || lo != 1 || hi != n || rows != n {
			t.Errorf("%s: acknowledged sequences 1..%d; stored %d messages (%d distinct, %d..%d) in %d epochs, %d summaries",
				ag.id, n, msgs, distinct, lo, hi, epochs, rows)
		}
		if uint64(requests) != ag.recorded.Load() {
			t.Errorf("%s: recorded %d inferences, the store counts %d requests", ag.id, ag.recorded.Load(), requests)
		}
		want += ag.recorded.Load()
		resent += st.Sent - st.Acked
		t.Logf("%s: %d inferences in %d messages, %d sends", ag.id, ag.recorded.Load(), n, st.Sent)
	}
	if held && resent == 0 {
		t.Error("nothing was sent again: the replica went holding no summary, so the test did not try what it must")
	}
	r, err := c.Drift(context.Background(), apiclient.DriftOptions{Model: summaryModel, Since: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var got uint64
	for _, rd := range r.Releases {
		got += rd.Requests
	}
	if got != want {
		t.Errorf("the control plane's drift report counts %d requests, the devices recorded %d: %+v", got, want, r)
	}
}

// recordAll has every agent record until the returned stop is called;
// stop returns once they have stopped.
func recordAll(t *testing.T, agents []*summaryAgent) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, ag := range agents {
		wg.Go(func() { ag.record(done) })
	}
	var once sync.Once
	stop = func() { once.Do(func() { close(done); wg.Wait() }) }
	t.Cleanup(stop) // before the agents stop, should the test end early
	return stop
}

// awaitDrained waits until every agent has summarised every record it was
// given and its outbox is empty: every message acknowledged.
func awaitDrained(t *testing.T, agents []*summaryAgent) {
	t.Helper()
	within(t, 30*time.Second, "every agent's outbox drained", func() bool {
		for _, ag := range agents {
			if st := ag.stats(); st.Records != 0 || st.Pending != 0 || st.Buffered != ag.recorded.Load() {
				return false
			}
		}
		return true
	})
}

// summaryModel is the model the synthetic inferences are recorded under.
const summaryModel = "failover"

// summaryAgent is a real agent with no models that summarises and sends
// what the test records into its metrics buffer, in its data folder.
type summaryAgent struct {
	id       string
	a        *agent.Agent
	recorded atomic.Uint64
	t        *testing.T
}

func startSummaryAgent(t *testing.T, srv *server.Server, id, token string) *summaryAgent {
	t.Helper()
	a, err := agent.New(agent.Config{DataDir: filepath.Join(t.TempDir(), id), DeviceID: id, ServerURL: srv.APIURL(),
		EnrolToken: token, CAFingerprint: srv.CAFingerprint(), MQTTURL: srv.MQTTURL(), HeartbeatInterval: time.Second,
		Version: "failover-test", Logger: testLogger(t), Metrics: new(expvar.Map).Init(), TelemetryWithoutModels: true,
		Telemetry: agent.TelemetryConfig{Window: summaryWindow, CheckInterval: 50 * time.Millisecond,
			AckTimeout: summaryAckWait, MessagesPerSecond: 100}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent %s run: %v", id, err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, id+" connected", func() bool { return a.Status().State == agent.StateConnected && a.Recorder() != nil })
	return &summaryAgent{id: id, a: a, t: t}
}

// record records an inference every 10 ms until stop closes.
func (s *summaryAgent) record(stop <-chan struct{}) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 0))
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			rec := s.a.Recorder()
			if rec == nil {
				s.t.Errorf("%s: no metrics buffer while running", s.id)
				return
			}
			rec.Record(metrics.Record{Model: summaryModel, Release: 1, Version: "1", Slot: "a", At: now,
				Latency: time.Duration(1+rng.IntN(20)) * time.Millisecond, OK: true})
			s.recorded.Add(1)
		}
	}
}

func (s *summaryAgent) stats() metrics.Stats {
	o := s.a.Observe(context.Background())
	if o.Buffer == nil || o.BufferErr != nil {
		s.t.Fatalf("%s: metrics buffer: %v", s.id, o.BufferErr)
	}
	return *o.Buffer
}

// link relays TCP connections to upstream until severed: then every
// relayed connection closes at once and new ones are refused, which is
// what a replica sees when its machine drops off the network, and what
// the broker and the database see when it dies.
type link struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	severed bool
	conns   []net.Conn
}

func startLink(t *testing.T, upstream string) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{ln: ln, upstream: upstream}
	go l.serve()
	t.Cleanup(l.sever)
	return l
}

func (l *link) addr() string { return l.ln.Addr().String() }

func (l *link) serve() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.DialTimeout("tcp", l.upstream, wait)
		if err != nil {
			c.Close()
			continue
		}
		l.mu.Lock()
		if l.severed {
			l.mu.Unlock()
			c.Close()
			u.Close()
			continue
		}
		l.conns = append(l.conns, c, u)
		l.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close(); c.Close() }()
		go func() { _, _ = io.Copy(c, u); u.Close(); c.Close() }()
	}
}

// sever closes every relayed connection and refuses new ones.
func (l *link) sever() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.severed = true
	l.ln.Close()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

// hostPort is the host:port of a URL.
func hostPort(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		t.Fatalf("no host in %q: %v", raw, err)
	}
	return u.Host
}

// withHost is the URL raw with its host:port replaced.
func withHost(t *testing.T, raw, hostport string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = hostport
	return u.String()
}
