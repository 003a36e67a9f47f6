package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/enrol"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// shutdownTimeout bounds the OFFLINE publish on a clean shutdown.
const shutdownTimeout = 5 * time.Second

// session is the agent's life with one identity: the reconnect loop and the
// connection it serves.
type session struct {
	a      *Agent
	db     *state.DB
	id     state.Identity
	scheme topic.Scheme
	url    string
	tls    *tls.Config
	inbox  *inbox

	// heartbeat is the interval in force: the configured one, or the
	// control plane's hint from the desired state. rearm asks the serve
	// loop to restart its timer with it.
	heartbeat time.Duration
	rearm     bool
	hints     *flotillapb.DesiredHints // of the current desired state
	labels    map[string]string        // as last announced in birth

	// acks and teleKick feed the telemetry goroutine (telemetry.go).
	acks     chan *flotillapb.Ack
	teleKick chan struct{}

	stage  *stager         // runs agent/install beside the serve loop
	models *models         // with Config.Models: the lifecycle, runtimes, inference API
	buf    *metrics.Buffer // the metrics buffer and telemetry outbox; nil: no telemetry

	connMu sync.Mutex
	conn   Conn                    // the live connection, nil between connections
	routes map[string]func([]byte) // topic → handler, bypassing the inbox (bundle topics)
}

// current is the live connection, or nil.
func (s *session) current() Conn {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.conn
}

func (s *session) setCurrent(c Conn) {
	s.connMu.Lock()
	s.conn = c
	s.connMu.Unlock()
}

// route sends messages on topic name to deliver (nil: back to the inbox).
func (s *session) route(name string, deliver func([]byte)) {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if deliver == nil {
		delete(s.routes, name)
		return
	}
	s.routes[name] = deliver
}

// onMessage is the MQTT client's handler: routed topics go straight to
// their handler (which must not block), the rest to the inbox.
func (s *session) onMessage(name string, payload []byte) {
	s.connMu.Lock()
	deliver := s.routes[name]
	s.connMu.Unlock()
	if deliver != nil {
		deliver(payload)
		return
	}
	s.inbox.push(name, payload)
}

func (a *Agent) newSession(_ context.Context, db *state.DB, id state.Identity, m *models, buf *metrics.Buffer) (*session, error) {
	prefix := id.TopicPrefix
	if a.cfg.TopicPrefix != "" {
		prefix = a.cfg.TopicPrefix
	}
	scheme, err := topic.New(prefix)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	url := id.MQTTURL
	if a.cfg.MQTTURL != "" {
		url = a.cfg.MQTTURL
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(id.CAPEM) > 0 {
		if tc.RootCAs, err = enrol.CAPool(id.CAPEM); err != nil {
			return nil, fmt.Errorf("agent: stored CA: %w", err)
		}
	}
	if len(id.CertPEM) > 0 {
		cert, err := clientCert(a.cfg.DataDir, id.CertPEM)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	ib := newInbox()
	ib.dropped = func() { a.count(CounterInboundDropped) }
	s := &session{a: a, db: db, id: id, scheme: scheme, url: url, tls: tc, inbox: ib, heartbeat: a.liveConfig().HeartbeatInterval,
		routes: map[string]func([]byte){}, models: m, buf: buf, acks: make(chan *flotillapb.Ack, 256), teleKick: make(chan struct{}, 1)}
	icfg := install.Config{Dir: stagingDir(a.cfg.DataDir), DeviceID: id.DeviceID, Scheme: scheme,
		Stager: a.cfg.Stager, Slots: a.cfg.Slots, Fetch: a.cfg.Fetch, ChunkQuota: a.cfg.ChunkQuotaBytes, MemoryIndex: a.cfg.MemoryState, Now: a.clock.Now, Logger: a.log.With("component", "install")}
	if m != nil {
		icfg.Stager, icfg.Slots = m, m
	}
	s.stage = newStager(s, icfg)
	return s, nil
}

// clientCert pairs the issued certificate chain with the device key.
func clientCert(dir string, certPEM []byte) (tls.Certificate, error) {
	key, err := state.LoadOrCreateKey(dir)
	if err != nil {
		return tls.Certificate{}, err
	}
	var cert tls.Certificate
	for rest := certPEM; ; {
		var blk *pem.Block
		if blk, rest = pem.Decode(rest); blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			cert.Certificate = append(cert.Certificate, blk.Bytes)
		}
	}
	if len(cert.Certificate) == 0 {
		return tls.Certificate{}, errors.New("client certificate: no certificate in PEM")
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("client certificate: %w", err)
	}
	cert.Leaf, cert.PrivateKey = leaf, key
	return cert, nil
}

// run connects, serves, and reconnects with full-jitter backoff until ctx
// is done.
func (s *session) run(ctx context.Context) error {
	a := s.a
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.stage.run(ctx)
	}()
	defer func() { <-done }()
	if s.buf != nil {
		tdone := make(chan struct{})
		go func() {
			defer close(tdone)
			s.runTelemetry(ctx)
		}()
		defer func() { <-tdone }()
	}
	if s.models != nil {
		rdone := make(chan struct{})
		go func() {
			defer close(rdone)
			s.reportModels(ctx)
		}()
		defer func() { <-rdone }()
		if dir := s.models.cfg.SideloadDir; dir != "" {
			sdone := make(chan struct{})
			go func() {
				defer close(sdone)
				s.watchSideload(ctx, dir)
			}()
			defer func() { <-sdone }()
		}
	}
	attempt := 0
	for first := true; ; first = false {
		if !first {
			a.setState(StateConnecting)
			d := Backoff(attempt, backoffBase, backoffCap, a.rng)
			attempt++
			select {
			case <-ctx.Done():
				return nil
			case <-a.clock.After(d):
			}
		}
		a.setState(StateConnecting)
		lost := make(chan error, 1)
		conn, err := s.dial(ctx, lost)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.count(CounterConnectFailures)
			a.update(func(st *Status) { st.LastError = err.Error() })
			a.log.Warn("connect failed", "err", err, "attempt", attempt)
			continue
		}
		attempt = 0
		a.count(CounterConnects)
		err = s.serve(ctx, conn, lost)
		if ctx.Err() != nil {
			return nil
		}
		a.count(CounterReconnects)
		a.update(func(st *Status) { st.LastError = err.Error() })
		a.log.Warn("connection lost", "err", err)
		s.a.journal(ctx, s.db, "warn", "mqtt.lost", err.Error())
	}
}

func (s *session) dial(ctx context.Context, lost chan<- error) (Conn, error) {
	will, err := s.statusMessage(flotillapb.Status_STATE_OFFLINE, "lost")
	if err != nil {
		return nil, err
	}
	return s.a.dialer.Dial(ctx, DialOptions{
		URL:       s.url,
		TLS:       s.tls,
		ClientID:  s.id.DeviceID,
		Username:  s.id.MQTTUsername,
		Password:  s.id.MQTTPassword,
		KeepAlive: s.a.cfg.KeepAlive,
		Will:      will,
		OnMessage: s.onMessage,
		OnLost: func(err error) {
			if err == nil {
				err = errors.New("connection lost")
			}
			select {
			case lost <- err:
			default:
			}
		},
	})
}

// serve runs one connection until it is lost (returning why) or ctx is done
// (shutting down cleanly and returning nil).
func (s *session) serve(ctx context.Context, conn Conn, lost <-chan error) error {
	a := s.a
	if err := s.onConnect(ctx, conn); err != nil {
		conn.Disconnect()
		return err
	}
	s.setCurrent(conn)
	defer s.setCurrent(nil)
	s.stage.poke() // resume an interrupted staging
	if s.models != nil {
		s.models.ModelChanged(lifecycle.State{}) // report what changed while offline
		s.kickTelemetry()                        // drain the backlog
	}
	a.setState(StateConnected)
	a.log.Info("connected", "device", s.id.DeviceID, "broker", s.url)
	hb := a.clock.After(s.heartbeat)
	for {
		select {
		case <-ctx.Done():
			s.shutdown(conn)
			return nil
		case err := <-lost:
			return err
		case <-s.inbox.ready:
			for _, m := range s.inbox.drain() {
				s.handle(ctx, conn, m)
			}
			if s.rearm {
				s.rearm = false
				hb = a.clock.After(s.heartbeat)
			}
		case <-a.reconf:
			s.reconfigured(ctx, conn)
			if s.rearm {
				s.rearm = false
				hb = a.clock.After(s.heartbeat)
			}
		case <-hb:
			if err := s.publishHeartbeat(ctx, conn); err != nil {
				a.log.Warn("heartbeat", "err", err)
			}
			hb = a.clock.After(s.heartbeat)
		}
	}
}

// onConnect subscribes to the device's inbound topics and announces it.
// Once a desired state has been accepted, it also reports again what the
// device runs: the retained desired state it is sent back is the one it
// accepted (and answers nothing), so a report lost with the previous
// connection would otherwise never reach the control plane.
func (s *session) onConnect(ctx context.Context, conn Conn) error {
	filters := map[string]byte{}
	for _, k := range []topic.Kind{topic.Desired, topic.Command, topic.Ack, topic.SupportAck} {
		filters[s.scheme.Device(k, s.id.DeviceID)] = 1
	}
	filters[s.scheme.Fleet(topic.ReleaseMeta)] = 1
	if err := conn.Subscribe(ctx, filters); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	if err := s.announce(ctx, conn); err != nil {
		return err
	}
	if s.a.Status().DesiredRevision != 0 {
		if err := s.publishReported(ctx, conn); err != nil {
			return err
		}
	}
	return nil
}

// announce publishes birth and status ONLINE.
func (s *session) announce(ctx context.Context, conn Conn) error {
	if err := s.publishBirth(ctx, conn); err != nil {
		return err
	}
	return s.publishStatus(ctx, conn, flotillapb.Status_STATE_ONLINE, "")
}

// shutdown publishes status OFFLINE ("shutdown") and disconnects cleanly, so
// the broker drops the will.
func (s *session) shutdown(conn Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := s.publishStatus(ctx, conn, flotillapb.Status_STATE_OFFLINE, "shutdown"); err != nil {
		s.a.log.Warn("publish offline status", "err", err)
	}
	conn.Disconnect()
	s.a.log.Info("disconnected", "device", s.id.DeviceID)
}
