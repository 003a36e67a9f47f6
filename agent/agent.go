// Package agent is the Flotilla device agent as a library: it enrols the
// device with the control plane, keeps an MQTT session to the broker, and
// serves the device's topics (birth, status, heartbeat, desired and reported
// state, commands).
//
// Nothing here is global: the clock, the MQTT dialer, the HTTP client, the
// logger, the metrics map and the host facts are injected through Config, so
// one process can run many agents (the simulator, the tests) on a fake clock.
//
// Lifecycle of Run:
//
//	open state ─▶ enrolled? ──no──▶ enrol (retry transient, stop on refusal)
//	                 │yes                    │
//	                 ▼                       ▼
//	        ┌──▶ connect (jittered backoff on failure)
//	        │        │
//	        │        ▼ subscribe desired/cmd/ack/release-meta, publish birth, status ONLINE
//	        │      serve: inbound messages, heartbeat
//	        │        ╎ desired state or release metadata → the staging worker
//	        │        ╎ (its own goroutine, agent/install): verify, fetch, stage
//	        │        │
//	        └─lost───┤
//	                 ▼ ctx done
//	        publish status OFFLINE "shutdown", disconnect
//
// Inbound messages are hostile: each is decoded by proto/wire against its
// topic's limits; a malformed one, one for another device or on an unknown
// topic is logged, counted and dropped, and changes nothing.
package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"expvar"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/firmware/hostfacts"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/pin"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// DefaultHeartbeatInterval is used when Config.HeartbeatInterval is zero.
const DefaultHeartbeatInterval = 30 * time.Second

// Config configures one agent.
type Config struct {
	DataDir       string // the agent's data folder (state DB, key); required
	DeviceID      string // required for enrolment; checked with topic.ValidID
	ServerURL     string // https://host:port of the control-plane API, for enrolment
	EnrolToken    string // bootstrap token, used once
	CAFile        string // CA to trust on first contact, or:
	CAFingerprint string // SHA-256 of the CA certificate's DER, hex (colons optional): pinned on first contact
	MQTTURL       string // overrides the broker URL the server returned
	TopicPrefix   string // overrides the topic prefix the server returned
	Labels        map[string]string
	Version       string // agent version reported in birth; "" = "dev"

	HeartbeatInterval time.Duration // 0 = DefaultHeartbeatInterval
	KeepAlive         time.Duration // MQTT keepalive; 0 = 30 s

	Clock      Clock                    // nil = the real clock
	Logger     *slog.Logger             // nil = discard
	Metrics    *expvar.Map              // counters; nil = a fresh private map (never published)
	Dialer     Dialer                   // nil = PahoDialer{}
	HTTPClient *http.Client             // for enrolment; nil = built from CAFile/CAFingerprint
	Facts      func() *flotillapb.Facts // nil = firmware/hostfacts on "/"; the agent adds its runtimes

	// Bundle staging (agent/install, in DataDir/bundles). Stager is told
	// of each bundle staged in an inactive slot and Slots says which slot
	// is active. With Models set the agent's own lifecycle is both (and
	// these must be nil). Both nil: staging ends at "staged", with slot a
	// taken as inactive.
	Stager install.Stager
	Slots  install.Slots
	// Models runs the device's models (models.go): the lifecycle
	// activates what is staged, runtimes start on first need, the local
	// inference API serves. Nil: no models (simulators, session tests).
	Models *ModelsConfig
	// Fetch tunes bundle downloads; zero values take agent/fetch's defaults.
	Fetch fetch.Options
	// ChunkQuotaBytes caps the chunk store of downloaded bundles;
	// 0 = agent/chunkstore's default (1 GiB).
	ChunkQuotaBytes int64
	// Telemetry tunes the metrics buffer and the drift summaries sent on
	// dev/{id}/telemetry (telemetry.go); with Models only.
	Telemetry TelemetryConfig

	// TelemetryWithoutModels opens the metrics buffer and sends its
	// summaries without Models: records come from whoever holds
	// Agent.Recorder (agent/sim's synthetic inferences).
	TelemetryWithoutModels bool

	// MemoryState keeps the state database (agent/state), the metrics
	// buffer (agent/metrics) and the chunk store's index (agent/chunkstore)
	// in memory, not in DataDir: for agent/sim only, where thousands of agents
	// share one process's open-files limit. Nothing survives a restart.
	MemoryState bool
}

// Agent is one device agent. Create it with New and start it with Run.
type Agent struct {
	cfg     Config
	clock   Clock
	log     *slog.Logger
	metrics *expvar.Map
	dialer  Dialer
	pin     []byte // parsed CAFingerprint, nil when not pinning
	session uint64 // random per Agent: tells a restart from a reconnect
	started time.Time
	rng     *rand.Rand // used by Run's goroutine only

	mu        sync.Mutex
	status    Status
	inferAddr string          // the inference API's bound TCP address, once listening
	mods      *models         // while Run serves models, for Observe
	tele      *metrics.Buffer // Config.TelemetryWithoutModels's buffer, while Run runs
	reconf    chan struct{}
	live      Live

	dg diagHooks // what on-site diagnostics read (diagnose.go)
}

// New checks cfg and returns an agent. It does no I/O.
func New(cfg Config) (*Agent, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("agent: data folder is required")
	}
	if cfg.DeviceID != "" {
		if err := topic.ValidID(cfg.DeviceID); err != nil {
			return nil, fmt.Errorf("agent: device ID: %w", err)
		}
	}
	if cfg.TopicPrefix != "" {
		if _, err := topic.New(cfg.TopicPrefix); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	if cfg.CAFile != "" && cfg.CAFingerprint != "" {
		return nil, errors.New("agent: give a CA file or a CA fingerprint, not both")
	}
	if cfg.Models != nil && (cfg.Stager != nil || cfg.Slots != nil) {
		return nil, errors.New("agent: Models brings its own Stager and Slots; give one or the other")
	}
	if cfg.Models != nil && cfg.Models.InferAddr != "" {
		if err := loopbackOnly(cfg.Models.InferAddr); err != nil {
			return nil, err
		}
	}
	a := &Agent{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, metrics: cfg.Metrics, dialer: cfg.Dialer}
	if cfg.CAFingerprint != "" {
		p, err := pin.Parse(cfg.CAFingerprint)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.pin = p
	}
	if a.clock == nil {
		a.clock = realClock{}
	}
	if a.log == nil {
		a.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if a.metrics == nil {
		a.metrics = new(expvar.Map).Init()
	}
	if a.dialer == nil {
		a.dialer = PahoDialer{}
	}
	if a.cfg.HeartbeatInterval <= 0 {
		a.cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if a.cfg.KeepAlive <= 0 {
		a.cfg.KeepAlive = 30 * time.Second
	}
	if a.cfg.Version == "" {
		a.cfg.Version = "dev"
	}
	if a.cfg.Facts == nil {
		a.cfg.Facts = func() *flotillapb.Facts {
			f, err := hostfacts.Discover("/")
			if err != nil {
				a.log.Debug("host facts incomplete", "err", err)
			}
			return f
		}
	}
	var seed [16]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.rng = rand.New(rand.NewPCG(binary.LittleEndian.Uint64(seed[:8]), binary.LittleEndian.Uint64(seed[8:])))
	a.session = a.rng.Uint64() | 1 // never 0
	a.started = a.clock.Now()
	a.status = Status{DeviceID: cfg.DeviceID, State: StateStopped, Session: a.session}
	a.reconf = make(chan struct{}, 1)
	a.live = Live{HeartbeatInterval: a.cfg.HeartbeatInterval, Labels: cloneLabels(cfg.Labels)}
	for _, k := range counterNames {
		a.metrics.Add(k, 0)
	}
	return a, nil
}

// Run enrols the device if it has no credentials yet, connects to the
// broker and serves until ctx is done; then it publishes status OFFLINE
// ("shutdown") and disconnects. It returns nil after a clean shutdown, and an
// error when the agent cannot go on: the state cannot be opened, or the
// control plane refused enrolment (errors.Is with enrol.ErrUnauthorized,
// ErrConflict, ErrGone, ErrInvalid, ErrFingerprint). After staging a new
// agent binary it shuts down the same way and returns ErrRestartForUpdate;
// a new binary that did not connect before its deadline returns
// ErrUpdateNotConfirmed.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	a.dg.mu.Lock()
	a.dg.restart = cancel
	a.dg.mu.Unlock()
	err := a.run(ctx)
	switch cause := context.Cause(ctx); {
	case errors.Is(cause, ErrRestartForUpdate), errors.Is(cause, ErrUpdateNotConfirmed):
		return cause
	}
	return err
}

func (a *Agent) run(ctx context.Context) error {
	db, err := a.openState(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	defer a.setState(StateStopped)
	a.attach(db, nil, nil)
	defer a.detach()

	// Models serve before (and without) any connection.
	var m *models
	if a.cfg.Models != nil {
		if m, err = a.openModels(ctx, db); err != nil {
			return err
		}
		defer m.close()
		if err := a.openTelemetry(ctx, m); err != nil {
			return err
		}
		a.attach(nil, m, nil)
		mctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); m.run(mctx) }()
		defer func() { cancel(); <-done }()
		a.mu.Lock()
		if m.tcp != nil {
			a.inferAddr = m.tcp.String()
		}
		a.mods = m
		a.mu.Unlock()
		defer func() { a.mu.Lock(); a.mods = nil; a.mu.Unlock() }()
	}

	var buf *metrics.Buffer
	if m != nil {
		buf = m.buf
	} else if a.cfg.TelemetryWithoutModels {
		if buf, err = a.openBuffer(ctx, nil, nil); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer buf.Close()
		a.mu.Lock()
		a.tele = buf
		a.mu.Unlock()
		defer func() { a.mu.Lock(); a.tele = nil; a.mu.Unlock() }()
	}

	wctx, wcancel := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); a.watchUpdate(wctx, db, m) }() // selfupdate.go
	defer func() { wcancel(); <-wdone }()

	id, err := a.ensureEnrolled(ctx, db)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s, err := a.newSession(ctx, db, id, m, buf)
	if err != nil {
		return err
	}
	a.attach(nil, nil, s)
	return s.run(ctx)
}

// InferAddr is the local inference API's TCP address once Run listens
// ("" before, or with none configured).
func (a *Agent) InferAddr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inferAddr
}
