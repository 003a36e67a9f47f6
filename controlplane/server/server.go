// Package server wires the control plane together: store, certificate
// authority, MQTT broker (embedded or external), the control plane's own
// MQTT connection, the device registry and the HTTPS API. flotilla-server
// is a thin command around it, and tests run it in-process.
package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"expvar"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/controlplane/promexport"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Config is everything flotilla-server takes. The zero value (plus a data
// folder) is the embedded default: SQLite, the embedded broker, a CA made
// on first start.
type Config struct {
	DataDir string
	// Database is the store: "" for SQLite in DataDir (flotilla.db), or a
	// PostgreSQL URL (postgres://user@host:5432/db; the password is best
	// left to PGPASSWORD) that several replicas may share.
	Database string
	// Listen is the HTTPS API's address; default ":8443".
	Listen string
	// MQTTListen is the embedded broker's address; default ":8883".
	MQTTListen string
	// Hosts are extra names and IPs for the server certificate.
	Hosts []string
	// PublicMQTTURL is the broker URL devices are told at enrolment;
	// default mqtts://<first host or 127.0.0.1>:<MQTT port>.
	PublicMQTTURL string
	// TopicPrefix; default flotilla/v1.
	TopicPrefix string
	// HeartbeatInterval hinted to agents; 0 leaves theirs.
	HeartbeatInterval time.Duration

	// External broker: when MQTTURL is set the embedded one is not started.
	MQTTURL      string
	MQTTUser     string
	MQTTPassword string
	// MQTTCAPEM is the CA of the external broker's certificate; default:
	// the control plane's own CA. Devices are given both.
	MQTTCAPEM []byte
	// Dynsec manages device credentials on an external Mosquitto; nil: the
	// external broker authenticates devices some other way.
	Dynsec *Dynsec

	// Operator-supplied TLS: certificate, key and the CA devices trust.
	TLSCert, TLSKey, TLSCA string

	// Bundle trust and delivery (DATA/release/, DATA/bundles/).
	// ReleaseOnlineKey is the release repository's online key file (made
	// by `flotctl keys generate`); "" = the one online-*.pem in
	// DATA/release/.
	ReleaseOnlineKey string
	ReleaseExpiry    release.Expiry // zero: release.DefaultExpiry
	ReleaseRefresh   time.Duration  // how often expiries are checked; 0 = DefaultReleaseRefresh
	DirectorRenew    time.Duration  // re-sign a device's director metadata after; 0 = half release.DefaultDirectorExpiry
	WaveDelay        time.Duration  // between an assignment and its wave; 0 = DefaultWaveDelay
	WaveRate         int64          // wave pace in bytes/s; 0 = delivery.DefaultWaveRate

	// Telemetry ingest, rollups and retention (telemetry.go).
	Telemetry TelemetryConfig
	// Rollouts tunes the rollout scheduler (rollouts.go); Alerts says
	// where its alerts go (alerts.go).
	Rollouts RolloutConfig
	Alerts   AlertConfig
	// Console tunes the operator console (console.go).
	Console ConsoleConfig

	Logger  *slog.Logger
	Version string
	Now     func() time.Time
}

// Server is a running control plane.
type Server struct {
	cfg      Config
	log      *slog.Logger
	scheme   topic.Scheme
	store    *store.Store
	delivery *deliveryService
	ca       *pki.Authority
	broker   *broker.Embedded
	mqtt     *MQTT
	admin    *MQTT // the external broker's dynsec admin connection
	regMu    sync.RWMutex
	registry *registry.Registry
	api      *api.API
	http     *http.Server
	httpLn   net.Listener
	metrics  *expvar.Map
	prom     *promexport.Exporter // /metrics (promsource.go)

	adminToken string
	life       context.Context // ends at Close
	end        context.CancelFunc
	bg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
	telemetry  *telemetryService
	rollouts   *rolloutService
	alerts     *alerter
	support    *supportService
}

// New starts a control plane: it returns once the API listens and the
// control plane's MQTT connection is up. Close stops it.
func New(ctx context.Context, cfg Config) (s *Server, err error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: a data folder is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Listen == "" {
		cfg.Listen = ":8443"
	}
	if cfg.MQTTListen == "" {
		cfg.MQTTListen = ":8883"
	}
	if cfg.ReleaseExpiry == (release.Expiry{}) {
		cfg.ReleaseExpiry = release.DefaultExpiry
	}
	cfg.ReleaseRefresh = cmp.Or(cfg.ReleaseRefresh, DefaultReleaseRefresh)
	cfg.DirectorRenew = cmp.Or(cfg.DirectorRenew, release.DefaultDirectorExpiry/2)
	cfg.WaveDelay = cmp.Or(cfg.WaveDelay, DefaultWaveDelay)
	scheme, err := topic.New(cfg.TopicPrefix)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data folder: %w", err)
	}
	s = &Server{cfg: cfg, log: cfg.Logger, scheme: scheme, metrics: new(expvar.Map).Init()}
	s.life, s.end = context.WithCancel(context.Background())
	started := s // the returns below set s to nil
	defer func() {
		if err != nil {
			started.Close()
		}
	}()

	if s.store, err = openStore(ctx, cfg); err != nil {
		return nil, err
	}
	if err = s.openCA(); err != nil {
		return nil, err
	}

	// The control plane's own MQTT identity. With the embedded broker the
	// secret is made afresh at each start and never leaves the process.
	serviceUser, servicePassword := cfg.MQTTUser, cfg.MQTTPassword
	var serviceHash [sha256.Size]byte
	if cfg.MQTTURL == "" {
		serviceUser, servicePassword = registry.ServiceUser, randomSecret()
		serviceHash = sha256.Sum256([]byte(servicePassword))
	}

	s.mqtt = newMQTT(mqttOptions{
		User: serviceUser, Password: servicePassword, CAPEM: s.brokerCAPEM(),
		ClientID: "flotilla-control-" + instanceID(), Logger: cfg.Logger.With("component", "mqtt"),
	})
	regCfg := registry.Config{
		Store: s.store, Publisher: s.mqtt, Scheme: scheme, CAPEM: s.ca.CAPEM(), ServiceHash: serviceHash,
		Now: cfg.Now, Logger: cfg.Logger.With("component", "registry"), Metrics: s.metrics,
		HeartbeatInterval: cfg.HeartbeatInterval,
	}
	if err = s.openAlerts(); err != nil {
		return nil, err
	}
	if err = s.openDelivery(); err != nil {
		return nil, err
	}
	regCfg.DirectorMetadata = s.delivery.directorMetadata
	s.openTelemetry()
	s.telemetry.start()
	if s.ca.CanIssue() {
		regCfg.Issuer = s.ca
	}
	if cfg.MQTTURL == "" {
		// The broker asks the registry who may connect; the registry asks
		// the broker to drop revoked devices. brokerAuth breaks the circle:
		// it refuses everyone until the registry exists.
		s.broker, err = broker.New(broker.Config{
			Addr: cfg.MQTTListen, TLS: s.ca.ServerTLS(), Auth: (*brokerAuth)(s), ACL: (*brokerAuth)(s),
			Logger: cfg.Logger.With("component", "broker"),
		})
		if err != nil {
			return nil, err
		}
		if err = s.broker.Start(); err != nil {
			return nil, err
		}
		// Every device connection died with the previous process, and its
		// broker delivered no last wills.
		if n, err := s.store.MarkAllOffline(ctx, cfg.Now().UnixMilli()); err != nil {
			return nil, err
		} else if n > 0 {
			s.log.Info("devices marked offline until they reconnect", "devices", n)
		}
		regCfg.Credentials = embeddedCredentials{s.broker}
		regCfg.MQTTURL = s.publicMQTTURL()
		s.setRegistry(registry.New(regCfg))
		err = s.mqtt.Connect(ctx, "ssl://"+loopback(s.broker.Addr()))
	} else {
		if cfg.Dynsec != nil {
			if regCfg.Credentials, err = cfg.Dynsec.credentials(ctx, s, scheme); err != nil {
				return nil, fmt.Errorf("external broker credentials: %w", err)
			}
		}
		regCfg.MQTTURL = s.publicMQTTURL()
		regCfg.CAPEM = append(append([]byte(nil), s.ca.CAPEM()...), cfg.MQTTCAPEM...)
		s.setRegistry(registry.New(regCfg))
		err = s.mqtt.Connect(ctx, cfg.MQTTURL)
	}
	if err != nil {
		return nil, err
	}
	if err = s.openSupport(); err != nil {
		return nil, err
	}
	subs := append(s.registry.Subscriptions(controlGroup),
		topic.Shared(controlGroup, scheme.AllDevices(topic.SupportUpload)),
		topic.Shared(controlGroup, scheme.AllDevices(topic.ChunkRequest)),
		topic.Shared(controlGroup, scheme.AllDevices(topic.Progress)),
		s.telemetry.subscription())
	if err = s.mqtt.Subscribe(subs, s.handleMessage); err != nil {
		return nil, err
	}
	s.openRollouts()
	s.delivery.start()
	s.rollouts.start()

	if s.broker != nil {
		// The embedded broker's retained messages died with the last process.
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			n, err := s.registry.RepublishDesired(s.life, s.store)
			s.log.Info("desired states restored on the embedded broker", "devices", n, "err", err)
		}()
	}
	if err = s.ensureAdminToken(ctx); err != nil {
		return nil, err
	}
	s.api = api.New(api.Config{Store: s.store, Registry: enroller{s.registry, s.delivery.trust}, Bundles: s.delivery, Telemetry: s.telemetry, Rollouts: s.rollouts, Support: s.support, Logger: cfg.Logger.With("component", "api"),
		Now: cfg.Now, Metrics: s.metrics, Version: cfg.Version})
	handler, err := s.httpHandler()
	if err != nil {
		return nil, err
	}
	if s.httpLn, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("api listener: %w", err)
	}
	s.http = &http.Server{
		Handler: s.handler(handler), TLSConfig: s.ca.ServerTLS(),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 90 * time.Second,
		IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	go func() {
		if err := s.http.ServeTLS(s.httpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("api server stopped", "err", err)
		}
	}()
	s.log.Info("control plane ready", "api", s.APIURL(), "mqtt", regCfg.MQTTURL,
		"ca_fingerprint", s.ca.Fingerprint())
	return s, nil
}

// controlGroup is the shared-subscription group of control-plane replicas.
const controlGroup = "flotilla-control"

// handleMessage routes what devices publish: delivery's topics (chunk
// requests, progress) to delivery, telemetry to its ingest, the rest to
// the registry.
func (s *Server) handleMessage(ctx context.Context, name string, payload []byte) {
	if s.delivery.handle(name, payload) || s.telemetry.handle(name, payload) || s.support.Handle(ctx, name, payload) {
		return
	}
	s.registry.HandleMessage(ctx, name, payload)
}

// enroller adds the trusted roots to every enrolment answer: the device's
// bundle trust starts from what it got over the pinned channel.
type enroller struct {
	*registry.Registry
	trust *trustRepos
}

func (e enroller) Enrol(ctx context.Context, req *pb.EnrolRequest) (*pb.EnrolResponse, error) {
	resp, err := e.Registry.Enrol(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.ReleaseRoot, resp.DirectorRoot = e.trust.Roots()
	return resp, nil
}

func (s *Server) openCA() error {
	var err error
	if s.cfg.TLSCert != "" {
		s.ca, err = pki.FromFiles(s.cfg.TLSCert, s.cfg.TLSKey, s.cfg.TLSCA)
		return err
	}
	s.ca, err = pki.LoadOrCreate(filepath.Join(s.cfg.DataDir, "pki"), s.cfg.Hosts, s.cfg.Now())
	return err
}

// publicMQTTURL is what devices are told to connect to.
func (s *Server) publicMQTTURL() string {
	if s.cfg.PublicMQTTURL != "" {
		return s.cfg.PublicMQTTURL
	}
	if s.cfg.MQTTURL != "" {
		return s.cfg.MQTTURL
	}
	host := "127.0.0.1"
	if len(s.cfg.Hosts) > 0 {
		host = s.cfg.Hosts[0]
	}
	_, port, _ := net.SplitHostPort(s.broker.Addr().String())
	return "mqtts://" + net.JoinHostPort(host, port)
}

// Close stops the API, the MQTT connection, the broker and the store, in
// that order.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var errs []error
		s.end()
		s.bg.Wait()
		if s.http != nil {
			errs = append(errs, s.http.Shutdown(ctx))
		} else if s.httpLn != nil {
			errs = append(errs, s.httpLn.Close())
		}
		if s.mqtt != nil {
			s.mqtt.Close()
		}
		if s.admin != nil {
			s.admin.Close()
		}
		if s.broker != nil {
			errs = append(errs, s.broker.Close())
		}
		if s.store != nil {
			if s.delivery != nil {
				s.delivery.flushReports(ctx)
			}
			errs = append(errs, s.store.Close())
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// APIURL is the API's base URL on the loopback interface.
func (s *Server) APIURL() string { return "https://" + loopback(s.httpLn.Addr()) }

// MQTTURL is the URL devices are told at enrolment.
func (s *Server) MQTTURL() string { return s.publicMQTTURL() }

// BrokerAddr is the embedded broker's address, or nil with an external one.
func (s *Server) BrokerAddr() net.Addr {
	if s.broker == nil {
		return nil
	}
	return s.broker.Addr()
}

// CAPEM is the CA that devices and operators trust.
func (s *Server) CAPEM() []byte { return s.ca.CAPEM() }

// CAFingerprint is the CA's SHA-256 fingerprint.
func (s *Server) CAFingerprint() string { return s.ca.Fingerprint() }

// AdminToken is the admin API token made on first start, or "" when the
// store already had tokens.
func (s *Server) AdminToken() string { return s.adminToken }

// openStore opens the database Config.Database names.
func openStore(ctx context.Context, cfg Config) (*store.Store, error) {
	switch {
	case cfg.Database == "":
		return store.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "flotilla.db"))
	case strings.HasPrefix(cfg.Database, "postgres://"), strings.HasPrefix(cfg.Database, "postgresql://"):
		return store.OpenPostgres(ctx, cfg.Database)
	default:
		return nil, fmt.Errorf("database: %w: want a postgres:// URL, or nothing for SQLite in the data folder", store.ErrInvalid)
	}
}

// Store is the server's store, for tests and tools in-process.
func (s *Server) Store() *store.Store { return s.store }

// Metrics are the server's counters.
func (s *Server) Metrics() *expvar.Map { return s.metrics }

func randomSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("server: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// loopback turns a wildcard listen address into one a local client can
// dial.
func loopback(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// instanceID tells this server apart from every other on the broker —
// replicas on one host, or several in one test process — so that one
// never takes over another's MQTT session.
func instanceID() string {
	var b [4]byte
	rand.Read(b[:])
	return hostID() + "-" + hex.EncodeToString(b[:])
}

func hostID() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%s", sanitize(h), strconv.Itoa(os.Getpid()))
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			b[i] = '-'
		}
	}
	if len(b) > 32 {
		b = b[:32]
	}
	return string(b)
}
