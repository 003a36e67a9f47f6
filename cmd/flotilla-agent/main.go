// Command flotilla-agent is the Flotilla device agent: flags and wiring
// only; the agent itself is package agent.
//
//	flotilla-agent run [-config FILE] [-data-dir DIR] [-server URL] [-token T]
//	                   [-ca-fingerprint FP] [-device-id ID] [-label k=v]...
//	flotilla-agent version
//
// Settings come from the config file, then FLOTILLA_* environment variables,
// then flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/config"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// version is set at build time: -ldflags "-X main.version=1.2.3".
var version = "dev"

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "version":
		fmt.Printf("flotilla-agent %s (protocol %d)\n", version, wire.ProtocolVersion)
	case "help", "-h", "-help", "--help":
		usage(os.Stdout)
	default:
		usage(os.Stderr)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-agent:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: flotilla-agent run [flags] | version\n\nrun -h lists the flags of run.")
}

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	cfgPath := fs.String("config", os.Getenv("FLOTILLA_CONFIG"), "TOML config file (default $FLOTILLA_CONFIG)")
	dataDir := fs.String("data-dir", "", "data folder (default "+config.DefaultDataDir+")")
	server := fs.String("server", "", "control-plane API URL, for enrolment")
	token := fs.String("token", "", "bootstrap enrol token (prefer FLOTILLA_ENROL_TOKEN: flags show in ps)")
	fp := fs.String("ca-fingerprint", "", "SHA-256 fingerprint of the control plane's CA, pinned on first contact")
	caFile := fs.String("ca-file", "", "CA certificate to trust on first contact")
	deviceID := fs.String("device-id", "", "device ID, for enrolment")
	logLevel := fs.String("log-level", "", "debug, info, warn or error")
	var labels []string
	fs.Func("label", "label key=value (repeatable)", func(kv string) error { labels = append(labels, kv); return nil })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	fc, err := config.LoadConfig(*cfgPath, os.Getenv)
	if err != nil {
		return err
	}
	for dst, v := range map[*string]string{
		&fc.DataDir: *dataDir, &fc.Server: *server, &fc.EnrolToken: *token,
		&fc.CAFingerprint: *fp, &fc.CAFile: *caFile, &fc.DeviceID: *deviceID, &fc.LogLevel: *logLevel,
	} {
		if v != "" {
			*dst = v
		}
	}
	for _, kv := range labels {
		if err := fc.AddLabel(kv); err != nil {
			return err
		}
	}
	var level slog.Level
	if fc.LogLevel != "" {
		if err := level.UnmarshalText([]byte(fc.LogLevel)); err != nil {
			return fmt.Errorf("log level: %w", err)
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	cfg, err := fc.Agent()
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.Version = version
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version, "config", fc.String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return a.Run(ctx)
}
