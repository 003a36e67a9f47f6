package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
)

// Defaults of Config.
const (
	// DefaultMaxPacketSize fits a 256 KiB bundle chunk with its protobuf
	// envelope, topic and headers, with room to spare.
	DefaultMaxPacketSize = 512 << 10
	DefaultMaxPending    = 1024
	DefaultConnectTime   = 10 * time.Second
	DefaultSessionExpiry = 7 * 24 * time.Hour
	// DefaultMaxQueued bounds each client's outbound queue (mochi's default
	// is 8192 packets: 2 GiB of 256 KiB chunks for one stalled device).
	DefaultMaxQueued = 256
	// DefaultMaxInflight bounds the QoS 1 messages held for each client,
	// sent and unacknowledged or queued while it is offline.
	DefaultMaxInflight = 1024
)

// Config configures an embedded broker.
type Config struct {
	Addr string      // listen address, e.g. ":8883" or "127.0.0.1:0"
	TLS  *tls.Config // nil: plain TCP, for tests only
	Auth Authenticator
	ACL  Authorizer
	// Logger receives the broker's logs; nil discards them.
	Logger *slog.Logger
	// MaxPacketSize caps every MQTT packet, CONNECT included; larger ones
	// close the connection. 0 means DefaultMaxPacketSize.
	MaxPacketSize uint32
	// MaxClients caps authenticated connections; 0 means no cap.
	MaxClients int
	// MaxPending caps connections still in the TLS handshake, CONNECT or
	// authentication; further ones are closed at accept (a reconnect storm
	// then spreads over the devices' back-off). 0 means DefaultMaxPending.
	MaxPending int
	// ConnectTimeout bounds the TLS handshake plus the CONNECT packet, and
	// separately the Authenticator call. 0 means DefaultConnectTime.
	ConnectTimeout time.Duration
	// SessionExpiry is how long the session (subscriptions, queued QoS 1/2
	// messages) of a client that connected with clean session off outlives
	// its connection. 0 means DefaultSessionExpiry.
	SessionExpiry time.Duration
	// MaxQueued caps the packets waiting to be written to one client; when
	// it is full, further messages to that client are dropped (counted in
	// Stats.Dropped) instead of queued without bound. A bundle wave relies
	// on it: a slow device loses wave chunks and repairs them later. 0
	// means DefaultMaxQueued.
	MaxQueued int
	// MaxInflight caps the QoS 1 messages held for one client; 0 means
	// DefaultMaxInflight.
	MaxInflight int
}

// Embedded is the in-process MQTT broker.
type Embedded struct {
	cfg    Config
	log    *slog.Logger
	server *mqtt.Server
	live   *tracker
	stats  counters

	ctx     context.Context // cancelled by Close; bounds Authenticate calls
	cancel  context.CancelFunc
	pending chan struct{} // a slot per connection not yet authenticated

	mu     sync.Mutex
	ln     *listener
	closed bool
}

// New checks cfg and prepares a broker; Start opens its listener.
func New(cfg Config) (*Embedded, error) {
	if cfg.Auth == nil || cfg.ACL == nil {
		return nil, errors.New("broker: an authenticator and an authorizer are required")
	}
	if cfg.Addr == "" {
		return nil, errors.New("broker: no listen address")
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTime
	}
	if cfg.SessionExpiry <= 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.MaxQueued <= 0 {
		cfg.MaxQueued = DefaultMaxQueued
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.MaxQueued > math.MaxInt32 || cfg.MaxInflight > math.MaxUint16 {
		return nil, fmt.Errorf("broker: MaxQueued %d or MaxInflight %d too large", cfg.MaxQueued, cfg.MaxInflight)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	e := &Embedded{
		cfg:     cfg,
		log:     log,
		live:    newTracker(),
		pending: make(chan struct{}, cfg.MaxPending),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.server = mqtt.New(serverOptions(cfg, log))
	if err := e.server.AddHook(&hook{e: e}, nil); err != nil {
		return nil, fmt.Errorf("broker: add hook: %w", err)
	}
	return e, nil
}

// serverOptions are mochi's options for cfg.
func serverOptions(cfg Config, log *slog.Logger) *mqtt.Options {
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumPacketSize = cfg.MaxPacketSize
	if cfg.MaxClients > 0 {
		caps.MaximumClients = int64(cfg.MaxClients)
	}
	// mochi deletes every retained message older than this (default one
	// day), whatever the publisher asked; desired state and status are
	// retained for as long as the device exists.
	caps.MaximumMessageExpiryInterval = 0
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumClientWritesPending = int32(cfg.MaxQueued)
	caps.MaximumInflight = uint16(cfg.MaxInflight)
	// mochi checks the ACL before resolving an inbound topic alias; with
	// aliases off every publish is checked on its real topic.
	caps.TopicAliasMaximum = 0
	return &mqtt.Options{
		Capabilities:           caps,
		Logger:                 log,
		SysTopicResendInterval: 30,
	}
}

// Start opens the listener and starts serving.
func (e *Embedded) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("broker: closed")
	}
	if e.ln != nil {
		return errors.New("broker: already started")
	}
	nl, err := net.Listen("tcp", e.cfg.Addr)
	if err != nil {
		return fmt.Errorf("broker: listen: %w", err)
	}
	l := newListener("flotilla", nl, e)
	if err := e.server.AddListener(l); err != nil {
		nl.Close()
		return fmt.Errorf("broker: add listener: %w", err)
	}
	if err := e.server.Serve(); err != nil {
		nl.Close()
		return fmt.Errorf("broker: serve: %w", err)
	}
	e.ln = l
	e.log.Info("mqtt broker listening", "addr", nl.Addr().String(), "tls", e.cfg.TLS != nil)
	return nil
}

// Addr is the address the broker listens on (the real port when Config.Addr
// asked for port 0), or nil before Start.
func (e *Embedded) Addr() net.Addr {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ln == nil {
		return nil
	}
	return e.ln.ln.Addr()
}

// Disconnect drops every live connection of the principal with this ID,
// at once, including one that is authenticating right now. Call it after
// the Authenticator has stopped accepting the principal (e.g. a
// decommissioned device), or the client simply reconnects.
func (e *Embedded) Disconnect(principalID string) {
	for _, c := range e.live.take(principalID) {
		e.stats.kicked.Add(1)
		c.kick()
	}
}

// Close stops the listener and drops every connection. It is safe to call
// more than once.
func (e *Embedded) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.cancel()
	if e.ln == nil {
		return nil
	}
	return e.server.Close()
}
