// Command flotilla-server is the Flotilla control plane. With no flags it
// runs on the embedded MQTT broker and SQLite in ./flotilla-data, makes its
// own certificate authority, and serves the HTTPS API on :8443 and MQTT over
// TLS on :8883. See docs/operator-guide.md.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// version is set by the build (-ldflags -X main.version=…).
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-server:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "backup":
			return runBackup(os.Args[2:])
		case "restore":
			return runRestore(os.Args[2:])
		}
	}
	var (
		cfg      server.Config
		hosts    string
		logLevel string
		dynsec   string
		mqttCA   string
		showVer  bool
		webhooks string
	)
	fs := flag.NewFlagSet("flotilla-server", flag.ContinueOnError)
	fs.StringVar(&cfg.DataDir, "data-dir", env("FLOTILLA_DATA_DIR", "flotilla-data"), "data folder: database, CA, admin token")
	fs.StringVar(&cfg.Database, "database", env("FLOTILLA_DATABASE_URL", ""), "PostgreSQL URL (postgres://user@host:5432/db; password in PGPASSWORD); default: SQLite in the data folder")
	fs.StringVar(&cfg.Listen, "listen", env("FLOTILLA_LISTEN", ":8443"), "HTTPS API address")
	fs.StringVar(&cfg.MQTTListen, "mqtt-listen", env("FLOTILLA_MQTT_LISTEN", ":8883"), "embedded broker's MQTT-over-TLS address")
	fs.StringVar(&hosts, "hosts", env("FLOTILLA_HOSTS", ""), "comma-separated names and IPs devices use to reach this server (certificate SANs)")
	fs.StringVar(&cfg.PublicMQTTURL, "public-mqtt-url", env("FLOTILLA_PUBLIC_MQTT_URL", ""), "broker URL told to devices (default mqtts://<first host>:<mqtt port>)")
	fs.StringVar(&cfg.TopicPrefix, "topic-prefix", env("FLOTILLA_TOPIC_PREFIX", ""), "MQTT topic prefix (default flotilla/v1)")
	fs.DurationVar(&cfg.HeartbeatInterval, "heartbeat-interval", 0, "heartbeat interval hinted to agents (0: theirs)")
	fs.StringVar(&cfg.MQTTURL, "mqtt-url", env("FLOTILLA_MQTT_URL", ""), "external broker URL (ssl://host:8883); the embedded broker is not started")
	fs.StringVar(&cfg.MQTTUser, "mqtt-user", env("FLOTILLA_MQTT_USER", "flotilla-control"), "username on the external broker")
	fs.StringVar(&dynsec, "mqtt-dynsec-admin", env("FLOTILLA_DYNSEC_ADMIN", ""), "external Mosquitto: the dynamic-security admin user (password in FLOTILLA_DYNSEC_PASSWORD); devices are provisioned there")
	fs.StringVar(&mqttCA, "mqtt-ca", env("FLOTILLA_MQTT_CA", ""), "external broker: CA of its certificate (PEM), if not the server's own")
	fs.StringVar(&cfg.TLSCert, "tls-cert", env("FLOTILLA_TLS_CERT", ""), "server certificate (PEM); default: made by the server's own CA")
	fs.StringVar(&cfg.TLSKey, "tls-key", env("FLOTILLA_TLS_KEY", ""), "server key (PEM)")
	fs.StringVar(&cfg.TLSCA, "tls-ca", env("FLOTILLA_TLS_CA", ""), "CA devices trust and that signs client certificates (PEM)")
	fs.StringVar(&cfg.ReleaseOnlineKey, "release-online-key", env("FLOTILLA_RELEASE_ONLINE_KEY", ""), "the release repository's online key (from flotctl keys generate); default: the online-*.pem in DATA/release/")
	fs.StringVar(&logLevel, "log-level", env("FLOTILLA_LOG_LEVEL", "info"), "debug, info, warn or error")
	fs.DurationVar(&cfg.Rollouts.Every, "rollout-every", 0, "how often rollouts are reconciled (default 10s)")
	fs.StringVar(&webhooks, "alert-webhooks", env("FLOTILLA_ALERT_WEBHOOKS", ""), "comma-separated URLs that receive alerts (Alertmanager's JSON format)")
	fs.BoolVar(&showVer, "version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if showVer {
		fmt.Println(version)
		return nil
	}
	// Secrets come from the environment, never from flags (ps shows those).
	cfg.MQTTPassword = os.Getenv("FLOTILLA_MQTT_PASSWORD")
	if dynsec != "" {
		cfg.Dynsec = &server.Dynsec{AdminUser: dynsec, AdminPassword: os.Getenv("FLOTILLA_DYNSEC_PASSWORD")}
	}
	if mqttCA != "" {
		pem, err := os.ReadFile(mqttCA)
		if err != nil {
			return fmt.Errorf("-mqtt-ca: %w", err)
		}
		cfg.MQTTCAPEM = pem
	}
	if hosts != "" {
		cfg.Hosts = strings.Split(hosts, ",")
	}
	if webhooks != "" {
		cfg.Alerts.Webhooks = strings.Split(webhooks, ",")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	cfg.Version = version

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	srv, err := server.New(startCtx, cfg)
	cancel()
	if err != nil {
		return err
	}
	fmt.Printf("Flotilla control plane %s\n  API:            %s\n  MQTT:           %s\n  CA fingerprint: %s\n",
		version, srv.APIURL(), srv.MQTTURL(), srv.CAFingerprint())
	if tok := srv.AdminToken(); tok != "" {
		fmt.Printf("  admin token:    %s/%s (made on first start; keep it safe)\n", cfg.DataDir, server.AdminTokenFile)
	}
	<-ctx.Done()
	cfg.Logger.Info("shutting down")
	return srv.Close()
}

func env(key, def string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	return def
}
