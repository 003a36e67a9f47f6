// Command flotilla-sim runs many simulated devices in one process against a
// Flotilla control plane: flags and wiring only; see agent/sim.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/flotilla-edge/flotilla/agent/sim"
)

func main() {
	var o sim.Options
	labels := labelFlag{}
	flag.IntVar(&o.N, "n", 1, "number of simulated devices")
	flag.StringVar(&o.ServerURL, "server", "", "control-plane API URL, e.g. https://127.0.0.1:8443")
	flag.StringVar(&o.EnrolToken, "token", os.Getenv("FLOTILLA_ENROL_TOKEN"), "bootstrap token (default $FLOTILLA_ENROL_TOKEN)")
	flag.StringVar(&o.CAFingerprint, "ca-fingerprint", "", "SHA-256 fingerprint of the control plane's CA, to pin")
	flag.StringVar(&o.CAFile, "ca-file", "", "CA certificate to trust instead of a fingerprint")
	flag.StringVar(&o.MQTTURL, "mqtt-url", "", "override the broker URL the server returns")
	flag.StringVar(&o.DataDir, "data-dir", "flotilla-sim-data", "folder for the devices' data folders")
	flag.StringVar(&o.IDPrefix, "id-prefix", "sim", "device ID prefix")
	flag.DurationVar(&o.HeartbeatInterval, "heartbeat", 0, "heartbeat interval (0 = agent default)")
	flag.Var(labels, "label", "label key=value for every device (repeatable)")
	flag.Float64Var(&o.RampPerSecond, "ramp", sim.DefaultRampPerSecond, "agents started per second (< 0: all at once)")
	flag.IntVar(&o.RecordsPerMinute, "records-per-minute", sim.DefaultRecordsPerMinute,
		"synthetic inferences each device records a minute, summarised and sent each 60 s window (< 0: no telemetry)")
	metricsAddr := flag.String("metrics-addr", "", "serve /metrics and /devices/{id}/metrics here (e.g. 127.0.0.1:9590); \"\" = none")
	verbose := flag.Bool("v", false, "log every device's events")
	flag.Parse()

	level := slog.LevelWarn
	if *verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	o.Logger = log
	o.Labels = labels
	o.Online = func(d time.Duration) {
		fmt.Printf("%d devices online after %v\n", o.N, d.Round(time.Millisecond))
	}
	// Each device holds one descriptor (its MQTT connection; its
	// databases are in memory), and a few while it downloads a bundle:
	// take the hard limit.
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < lim.Max {
		lim.Cur = lim.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
	fl, err := sim.New(o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-sim:", err)
		os.Exit(1)
	}
	if *metricsAddr != "" {
		ln, err := net.Listen("tcp", *metricsAddr)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flotilla-sim:", err)
			os.Exit(1)
		}
		hs := &http.Server{Handler: fl.Handler(), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ln) }()
		defer hs.Close()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := fl.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-sim:", err)
		os.Exit(1)
	}
}

// labelFlag collects repeated -label key=value flags.
type labelFlag map[string]string

func (l labelFlag) String() string { return fmt.Sprint(map[string]string(l)) }

func (l labelFlag) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", kv)
	}
	l[k] = v
	return nil
}
