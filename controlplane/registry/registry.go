// Package registry is the control plane's device registry: it enrols
// devices, decides who may connect to the MQTT broker and what each client
// may touch, takes in what devices say about themselves (birth, status,
// heartbeat, reported state), publishes each device's desired state, and
// decommissions devices.
//
// The registry owns no storage and no connection: it is handed a store, a
// publisher and a credential sink through the small interfaces declared
// beside the code that uses them, so the same registry runs on the embedded
// broker and SQLite or on Mosquitto and PostgreSQL.
package registry

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/subtle"
	"expvar"
	"log/slog"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// ServiceUser is the MQTT username of the control plane's own connections.
const ServiceUser = "flotilla-control"

// Config holds what a Registry is built from.
type Config struct {
	Store       Store
	Publisher   Publisher         // how desired state and commands reach devices
	Credentials CredentialSink    // where device credentials live besides the store; nil: the store alone
	Issuer      CertIssuer        // issues device client certificates; nil: none
	Scheme      topic.Scheme      // topic names
	MQTTURL     string            // the broker URL devices are told at enrolment
	CAPEM       []byte            // the CA devices should trust, returned at enrolment
	ServiceHash [sha256.Size]byte // SHA-256 of the control plane's own MQTT secret
	Now         func() time.Time  // nil: time.Now
	Logger      *slog.Logger
	Metrics     *expvar.Map // counters; nil: a private map
	// HeartbeatInterval is the interval hinted to devices in their desired
	// state; 0 leaves the agent's default.
	HeartbeatInterval time.Duration
	// DirectorMetadata, if set, signs what a device should run into its
	// desired state of revision rev (DesiredState.director_metadata); nil
	// metadata means no assignment. An error leaves the retained desired
	// state as it was.
	DirectorMetadata func(ctx context.Context, deviceID string, rev uint64) (map[string][]byte, error)
}

// Registry is the device registry. It is safe for concurrent use.
type Registry struct {
	cfg     Config
	log     *slog.Logger
	metrics *expvar.Map

	mu      sync.Mutex
	waiters map[string]chan commandResult // by command ID
}

// New returns a registry.
func New(cfg Config) *Registry {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = new(expvar.Map).Init()
	}
	if cfg.Scheme == (topic.Scheme{}) {
		cfg.Scheme = topic.Default()
	}
	return &Registry{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics, waiters: map[string]chan commandResult{}}
}

// Metrics returns the registry's counters.
func (r *Registry) Metrics() *expvar.Map { return r.metrics }

func (r *Registry) nowMs() int64 { return r.cfg.Now().UnixMilli() }

// hashSecret is how every secret (MQTT passwords, bootstrap and API tokens)
// is stored: SHA-256. The secrets are 256-bit random strings, so a slow
// password hash would add nothing but cost on every reconnect.
func hashSecret(s []byte) []byte {
	h := sha256.Sum256(s)
	return h[:]
}

func equalHash(a, b []byte) bool {
	return len(a) == sha256.Size && subtle.ConstantTimeCompare(a, b) == 1
}

// CertIssuer issues client certificates for device keys.
type CertIssuer interface {
	IssueDeviceCert(deviceID string, pub ed25519.PublicKey, ttl time.Duration, now time.Time) (certPEM []byte, serial string, err error)
}

// CredentialSink holds device credentials outside the store: an external
// broker's own user database. The embedded broker reads the store directly
// and needs only Revoke, to drop live connections.
type CredentialSink interface {
	Provision(ctx context.Context, deviceID, password string) error
	Revoke(ctx context.Context, deviceID string) error
}

// Publisher sends a message to the broker.
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}
