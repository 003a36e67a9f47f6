// Command flotilla-agent is the Flotilla device agent: flags and wiring
// only; the agent itself is package agent.
//
//	flotilla-agent run [-config FILE] [-data-dir DIR] [-server URL] [-token T]
//	                   [-ca-fingerprint FP] [-device-id ID] [-label k=v]...
//	                   [-plugin-dir DIR] [-ort-lib PATH] [-infer-addr ADDR]
//	                   [-infer-socket PATH] [-sideload-dir DIR] [-diag-socket PATH]
//	                   [-metrics-addr ADDR]
//	flotilla-agent diag COMMAND [-json]   (status, models, logs, …: diag help)
//	flotilla-agent version
//
// Settings come from the config file, then FLOTILLA_* environment variables,
// then flags. The config file is watched: heartbeat_interval, labels and
// log_level apply without a restart (agent/config.Watch).
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/config"
	"github.com/flotilla-edge/flotilla/agent/diag"
	diagcli "github.com/flotilla-edge/flotilla/agent/diag/cli"
	"github.com/flotilla-edge/flotilla/agent/exepages"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/agent/promexport"
	"github.com/flotilla-edge/flotilla/firmware/selfupdate"
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
		if errors.Is(err, agent.ErrRestartForUpdate) {
			err = relaunch() // into the agent binary just staged
		}
	case "diag":
		os.Exit(diagcli.Main(context.Background(), diagcli.Env{Args: os.Args[2:], Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr}))
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
	fmt.Fprintln(w, "usage: flotilla-agent run [flags] | diag COMMAND | version\n\nrun -h lists the flags of run; diag help its commands.")
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
	pluginDir := fs.String("plugin-dir", "", "runtime plugin folder (default: next to this binary if a plugin is there, else "+config.DefaultPluginDir+")")
	ortLib := fs.String("ort-lib", "", "ONNX Runtime library for the onnx plugin (FLOTILLA_ORT_LIB)")
	inferAddr := fs.String("infer-addr", "", "local inference API on loopback TCP (default "+agent.DefaultInferAddr+"; off = none)")
	inferSocket := fs.String("infer-socket", "", "local inference API unix socket (default DATA_DIR/"+agent.InferSocketName+"; off = none)")
	sideloadDir := fs.String("sideload-dir", "", "sideload folder (default DATA_DIR/sideload; off = none)")
	diagSocket := fs.String("diag-socket", os.Getenv("FLOTILLA_DIAG_SOCKET"), "diagnostics unix socket (default $FLOTILLA_DIAG_SOCKET, else DATA_DIR/"+diag.SocketName+"; off = none)")
	metricsAddr := fs.String("metrics-addr", cmp.Or(os.Getenv("FLOTILLA_METRICS_ADDR"), promexport.DefaultAddr),
		"Prometheus /metrics on loopback TCP (FLOTILLA_METRICS_ADDR; off = none)")
	var labels []string
	fs.Func("label", "label key=value (repeatable)", func(kv string) error { labels = append(labels, kv); return nil })
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}

	load := func() (config.FileConfig, error) {
		fc, err := config.LoadConfig(*cfgPath, os.Getenv)
		if err != nil {
			return fc, err
		}
		for dst, v := range map[*string]string{
			&fc.DataDir: *dataDir, &fc.Server: *server, &fc.EnrolToken: *token,
			&fc.CAFingerprint: *fp, &fc.CAFile: *caFile, &fc.DeviceID: *deviceID, &fc.LogLevel: *logLevel,
			&fc.PluginDir: *pluginDir, &fc.ORTLib: *ortLib, &fc.InferAddr: *inferAddr,
			&fc.InferSocket: *inferSocket, &fc.SideloadDir: *sideloadDir,
		} {
			if v != "" {
				*dst = v
			}
		}
		for _, kv := range labels {
			if err := fc.AddLabel(kv); err != nil {
				return fc, err
			}
		}
		var l slog.Level
		if fc.LogLevel != "" {
			if err := l.UnmarshalText([]byte(fc.LogLevel)); err != nil {
				return fc, fmt.Errorf("log level: %w", err)
			}
		}
		return fc, nil
	}
	fc, err := load()
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	setLevel(level, fc.LogLevel)
	ring := logring.New(0, slog.LevelInfo) // recent records for flotilla-agent diag logs
	log := slog.New(ring.Handler(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))

	exeDir := ""
	if exe, err := os.Executable(); err == nil {
		exeDir = filepath.Dir(exe)
	}
	cfg, err := fc.Agent(exeDir)
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.Version = version
	// Self-update: the installed binary starts the active slot's agent
	// (firmware/selfupdate), unless it is that one; a pending one must
	// connect before its deadline.
	up := selfupdate.New(cfg.DataDir)
	if os.Getenv(selfupdate.SlotEnv) == "" {
		launch(up, log)
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	log.Info("starting", "version", version, "config", fc.String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Start-up maps nearly the whole binary; idle needs about half of it.
	go exepages.Loop(ctx, exepagesFirst, exepagesEvery, log.With("component", "exepages"))
	if *metricsAddr != "off" {
		reg := promexport.NewRegistry(a)
		reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
		if ms, err := promexport.Listen(*metricsAddr, reg, log); err != nil {
			// Metrics are for watching the agent: never a reason to stop it.
			log.Warn("metrics not served", "err", err)
		} else {
			defer ms.Close()
			log.Info("metrics served", "url", "http://"+ms.Addr().String()+"/metrics")
		}
	}
	if *cfgPath != "" {
		go func() {
			err := config.Watch(ctx, *cfgPath, fc, load, log, func(next config.FileConfig, _ []config.Change) {
				setLevel(level, next.LogLevel)
				a.Reconfigure(agent.Live{HeartbeatInterval: next.HeartbeatInterval, Labels: next.Labels})
			})
			if err != nil {
				log.Warn("config file not watched", "err", err)
			}
		}()
	}
	// Diagnostics: on the local socket, and remotely (diag commands).
	dsrv := diag.NewServer(diag.Config{Agent: a, Logs: ring, Logger: log.With("component", "diag"), ConfigPath: *cfgPath})
	a.SetRemoteDiag(dsrv.Remote)
	a.SetSupportBundler(dsrv.SupportBundle)
	if sock := *diagSocket; sock != config.Off {
		if sock == "" {
			sock = filepath.Join(cfg.DataDir, diag.SocketName)
		}
		l, err := diag.Listen(sock)
		if err != nil {
			log.Warn("diagnostics socket not opened", "err", err)
		} else {
			dctx, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if err := dsrv.Serve(dctx, l); err != nil {
					log.Warn("diagnostics socket stopped", "err", err)
				}
			}()
			defer func() { cancel(); <-done }()
			log.Info("diagnostics socket listening", "socket", sock)
		}
	}
	err = a.Run(ctx)
	if errors.Is(err, agent.ErrUpdateNotConfirmed) {
		log.Error("agent update not confirmed: exiting so that the previous agent is restored", "err", err)
	}
	return err
}

// The executable's pages are released once start-up is over (enrolment,
// the first connection, the first heartbeats and summary window), then
// every 5 minutes for what rare work touched since (each release costs the
// working set a few hundred minor faults, well under a millisecond).
const (
	exepagesFirst = 90 * time.Second
	exepagesEvery = 5 * time.Minute
)

// launch execs the active slot's agent when there is one; it returns only
// when the installed binary is the one to run (or the slot's cannot start:
// a pending one is then rolled back).
func launch(up *selfupdate.Updater, log *slog.Logger) {
	path, st, err := up.Select()
	if st.RejectedVersion != "" {
		log.Warn("agent update rolled back", "version", st.RejectedVersion, "reason", st.RejectedReason, "running", st.ActiveVersion)
	}
	if err != nil {
		log.Warn("agent slots unreadable; running the installed agent", "err", err)
		return
	}
	if path == "" {
		return
	}
	log.Info("starting the agent in its slot", "slot", st.Active, "version", st.ActiveVersion, "pending", st.Pending, "start", st.Attempts)
	err = syscall.Exec(path, os.Args, slotEnv(st.Active))
	log.Error("cannot start the agent in its slot; running the installed agent", "path", path, "err", err)
	if st.Pending {
		if _, err := up.Failed("exec: " + err.Error()); err != nil {
			log.Error("agent slots", "err", err)
		}
	}
}

// setLevel sets the log level ("" = info); load has checked it parses.
func setLevel(v *slog.LevelVar, s string) {
	var l slog.Level
	if s != "" {
		_ = l.UnmarshalText([]byte(s))
	}
	v.Set(l)
}

// slotEnv is the environment with SlotEnv set to slot ("" = removed).
func slotEnv(slot string) []string {
	var env []string
	if slot != "" {
		env = append(env, selfupdate.SlotEnv+"="+slot) // first: the one getenv finds
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, selfupdate.SlotEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

// relaunch starts this program again from the top, as the launcher, so
// that it runs the agent binary just staged. It returns only on failure.
func relaunch() error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart after staging a new agent: %w", err)
	}
	return fmt.Errorf("restart after staging a new agent: %w", syscall.Exec(exe, os.Args, slotEnv("")))
}
