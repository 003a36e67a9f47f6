// Package cli is `flotilla-agent diag`: the on-site diagnostics command.
// It asks the running agent over its diag socket (agent/diag) and, when
// the agent is not running, says so and reads what it can from the data
// folder: the state database read-only, the slot folders, the disk.
//
//	flotilla-agent diag [-socket PATH] [-data-dir DIR] [-config FILE] COMMAND [-json]
//	  status | models | test-infer MODEL | logs [-level L] [-grep S] [-limit N]
//	  resync | rollback MODEL [-reason TEXT]
//	  support-bundle [-o FILE]            (FILE and FILE.sig, signed by the device key)
//	  verify-bundle FILE [-sig FILE.sig] [-pubkey BASE64] [-ca CA.pem]
//
// Human output by default, -json for scripts. Exit status 0 on success,
// 1 on failure, 2 on a usage error, 3 when a command needs the running
// agent and it is not running.
package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/agent/config"
	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/agent/state"
)

// RuntimeSocket is where the packaged agent's systemd unit puts the diag
// socket (a folder the flotilla group can reach, unlike the data folder);
// tried before DataDir/diag.sock when no socket is named.
const RuntimeSocket = "/run/flotilla-agent/diag.sock"

// Exit statuses.
const (
	ExitOK         = 0
	ExitFailed     = 1
	ExitUsage      = 2
	ExitNotRunning = 3
)

// Env is what the command reads of its process.
type Env struct {
	Args   []string // after "diag"
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	// RuntimeSocket overrides the RuntimeSocket constant (tests).
	RuntimeSocket string
}

type cmd struct {
	env      Env
	socket   string
	dataDir  string
	cfgPath  string
	asJSON   bool
	level    string
	grep     string
	limit    int
	reason   string
	out      string
	sig      string
	pubkey   string
	caFile   string
	timeout  time.Duration
	resolved bool
}

const usage = `usage: flotilla-agent diag [-socket PATH] [-data-dir DIR] [-config FILE] COMMAND [flags]

commands:
  status                  identity, broker, clock skew, models, runtimes, buffer, disk, recent errors
  models                  each model: slots, releases, phase, health, counters
  test-infer MODEL        run the model's golden check now
  logs                    recent log records (-level warn, -grep TEXT, -limit N)
  resync                  fetch the desired state again and re-announce the device
  rollback MODEL          go back to the previous release (during probation; -reason TEXT)
  support-bundle          write a redacted, signed archive (-o FILE; FILE.sig beside it)
  verify-bundle FILE      check a support bundle's signature (-sig, -pubkey BASE64, -ca CA.pem)

every command takes -json.`

// Main runs the command and returns the exit status.
func Main(ctx context.Context, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.RuntimeSocket == "" {
		env.RuntimeSocket = RuntimeSocket
	}
	c := &cmd{env: env}
	fs := flag.NewFlagSet("diag", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprintln(env.Stderr, usage) }
	fs.StringVar(&c.socket, "socket", "", "diag socket (default $FLOTILLA_DIAG_SOCKET, "+RuntimeSocket+", DATA_DIR/"+diag.SocketName+")")
	fs.StringVar(&c.dataDir, "data-dir", "", "data folder (default from the config file, $FLOTILLA_DATA_DIR, "+config.DefaultDataDir+")")
	fs.StringVar(&c.cfgPath, "config", "", "config file (default $FLOTILLA_CONFIG)")
	fs.BoolVar(&c.asJSON, "json", false, "JSON output")
	fs.StringVar(&c.level, "level", "", "logs: least level (debug, info, warn, error)")
	fs.StringVar(&c.grep, "grep", "", "logs: keep records containing this text")
	fs.IntVar(&c.limit, "limit", 200, "logs: newest N records")
	fs.StringVar(&c.reason, "reason", "", "rollback: why (journaled)")
	fs.StringVar(&c.out, "o", "", "support-bundle: output file (default flotilla-support-DEVICE-TIME.tar.gz)")
	fs.StringVar(&c.sig, "sig", "", "verify-bundle: signature file (default FILE.sig)")
	fs.StringVar(&c.pubkey, "pubkey", "", "verify-bundle: the device's ed25519 public key, base64")
	fs.StringVar(&c.caFile, "ca", "", "verify-bundle: fleet CA certificate (PEM) the device certificate must chain to")
	fs.DurationVar(&c.timeout, "timeout", 90*time.Second, "give up on the agent after this long")
	// Flags may come before and after the command and its argument.
	var pos []string
	args := env.Args
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ExitOK
			}
			return ExitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) == 0 {
		fmt.Fprintln(env.Stderr, usage)
		return ExitUsage
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	code, err := c.run(ctx, pos[0], pos[1:])
	if err != nil {
		fmt.Fprintln(env.Stderr, "flotilla-agent diag:", err)
		if code == ExitOK {
			code = ExitFailed
		}
	}
	return code
}

func (c *cmd) run(ctx context.Context, name string, args []string) (int, error) {
	one := func() (string, error) {
		if len(args) != 1 {
			return "", fmt.Errorf("%s takes one model name", name)
		}
		return args[0], nil
	}
	if name != "test-infer" && name != "rollback" && name != "verify-bundle" && len(args) > 0 {
		fmt.Fprintln(c.env.Stderr, usage)
		return ExitUsage, nil
	}
	switch name {
	case "status":
		return c.status(ctx)
	case "models":
		return c.models(ctx)
	case "test-infer":
		m, err := one()
		if err != nil {
			return ExitUsage, err
		}
		return c.testInfer(ctx, m)
	case "logs":
		return c.logs(ctx)
	case "resync":
		return c.live(ctx, diag.Request{Cmd: diag.CmdResync}, nil, func() { fmt.Fprintln(c.env.Stdout, "resync requested: desired state fetched again, device announced") })
	case "rollback":
		m, err := one()
		if err != nil {
			return ExitUsage, err
		}
		var r diag.RollbackReport
		return c.live(ctx, diag.Request{Cmd: diag.CmdRollback, Model: m, Reason: c.reason}, &r, func() {
			when := "on the next connection"
			if r.Reported {
				when = "now"
			}
			fmt.Fprintf(c.env.Stdout, "%s rolled back: release %d active (%d rollbacks); reported to the control plane %s\n", r.Model, r.ActiveRelease, r.Rollbacks, when)
		})
	case "support-bundle":
		return c.supportBundle(ctx)
	case "verify-bundle":
		if len(args) != 1 {
			return ExitUsage, errors.New("verify-bundle takes one file")
		}
		return c.verifyBundle(args[0])
	case "help":
		fmt.Fprintln(c.env.Stdout, usage)
		return ExitOK, nil
	}
	fmt.Fprintln(c.env.Stderr, usage)
	return ExitUsage, fmt.Errorf("unknown command %q", name)
}

// resolve finds the data folder and the socket.
func (c *cmd) resolve() error {
	if c.resolved {
		return nil
	}
	c.resolved = true
	if c.cfgPath == "" {
		c.cfgPath = c.env.Getenv("FLOTILLA_CONFIG")
	}
	if c.dataDir == "" {
		fc, err := config.LoadConfig(c.cfgPath, c.env.Getenv)
		if err != nil {
			return err
		}
		c.dataDir = fc.DataDir
		if c.dataDir == "" {
			c.dataDir = config.DefaultDataDir
		}
	}
	if c.socket == "" {
		c.socket = c.env.Getenv("FLOTILLA_DIAG_SOCKET")
	}
	if c.socket == "" {
		if _, err := os.Stat(c.env.RuntimeSocket); err == nil {
			c.socket = c.env.RuntimeSocket
		} else {
			c.socket = filepath.Join(c.dataDir, diag.SocketName)
		}
	}
	return nil
}

// call asks the agent; notRunning is true when nothing answers.
func (c *cmd) call(ctx context.Context, req diag.Request, out any) (notRunning bool, err error) {
	if err := c.resolve(); err != nil {
		return false, err
	}
	err = diag.Call(ctx, c.socket, req, out)
	return errors.Is(err, diag.ErrNotRunning), err
}

// live runs a command only the running agent can answer.
func (c *cmd) live(ctx context.Context, req diag.Request, out any, human func()) (int, error) {
	down, err := c.call(ctx, req, out)
	if down {
		return ExitNotRunning, fmt.Errorf("%v; %s needs the running agent", err, req.Cmd)
	}
	if err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		if out == nil {
			out = map[string]bool{"ok": true}
		}
		return c.printJSON(out)
	}
	human()
	return ExitOK, nil
}

func (c *cmd) printJSON(v any) (int, error) {
	enc := json.NewEncoder(c.env.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return ExitFailed, err
	}
	return ExitOK, nil
}

// statusReport asks the agent, or reads the disk when it is not running.
func (c *cmd) statusReport(ctx context.Context) (diag.StatusReport, error) {
	var r diag.StatusReport
	down, err := c.call(ctx, diag.Request{Cmd: diag.CmdStatus}, &r)
	if !down {
		return r, err
	}
	fmt.Fprintf(c.env.Stderr, "flotilla-agent diag: %v\nreading the on-disk state of %s instead\n", err, c.dataDir)
	return diag.DiskStatus(ctx, c.dataDir)
}

func (c *cmd) status(ctx context.Context) (int, error) {
	r, err := c.statusReport(ctx)
	if err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		return c.printJSON(r)
	}
	writeStatus(c.env.Stdout, r)
	return ExitOK, nil
}

func (c *cmd) models(ctx context.Context) (int, error) {
	r, err := c.statusReport(ctx)
	if err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		return c.printJSON(r.Models)
	}
	writeModels(c.env.Stdout, r.Models)
	return ExitOK, nil
}

func (c *cmd) testInfer(ctx context.Context, model string) (int, error) {
	var r diag.TestInferReport
	code, err := c.live(ctx, diag.Request{Cmd: diag.CmdTestInfer, Model: model}, &r, func() {
		switch {
		case !r.HasGolden:
			fmt.Fprintf(c.env.Stdout, "%s release %d (%s): its manifest has no golden check; nothing run\n", r.Model, r.Release, r.Runtime)
		case r.Passed:
			fmt.Fprintf(c.env.Stdout, "%s release %d (%s): golden check PASSED in %.1f ms\n", r.Model, r.Release, r.Runtime, r.Millis)
		default:
			fmt.Fprintf(c.env.Stdout, "%s release %d (%s): golden check FAILED: %s\n", r.Model, r.Release, r.Runtime, r.Error)
		}
	})
	if code == ExitOK && err == nil && r.HasGolden && !r.Passed {
		code = ExitFailed
	}
	return code, err
}

func (c *cmd) logs(ctx context.Context) (int, error) {
	var r diag.LogsReport
	down, err := c.call(ctx, diag.Request{Cmd: diag.CmdLogs, Level: c.level, Contains: c.grep, Limit: c.limit}, &r)
	if down {
		// The journal is the durable part of the log.
		fmt.Fprintf(c.env.Stderr, "flotilla-agent diag: %v\nshowing the on-disk journal of %s instead\n", err, c.dataDir)
		return c.journalLogs(ctx)
	}
	if err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		return c.printJSON(r)
	}
	for _, e := range r.Entries {
		fmt.Fprintf(c.env.Stdout, "%s %-5s %s%s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Level, e.Message, attrs(e.Attrs))
	}
	return ExitOK, nil
}

func (c *cmd) journalLogs(ctx context.Context) (int, error) {
	evs, err := diag.DiskJournal(ctx, c.dataDir, 1000)
	if err != nil {
		return ExitFailed, err
	}
	min, err := logring.ParseLevel(c.level)
	if err != nil {
		return ExitUsage, err
	}
	var out []diag.Event
	for i := len(evs) - 1; i >= 0; i-- { // oldest first, like the log
		e := evs[i]
		lvl, _ := logring.ParseLevel(e.Level)
		if lvl < min || (c.grep != "" && !strings.Contains(strings.ToLower(e.Code+" "+e.Message), strings.ToLower(c.grep))) {
			continue
		}
		out = append(out, diag.Event{At: e.At, Level: e.Level, Source: "journal", Code: e.Code, Message: e.Message})
	}
	if c.limit > 0 && len(out) > c.limit {
		out = out[len(out)-c.limit:]
	}
	if c.asJSON {
		if out == nil {
			out = []diag.Event{}
		}
		return c.printJSON(out)
	}
	for _, e := range out {
		fmt.Fprintf(c.env.Stdout, "%s %-5s %s %s\n", e.At.Local().Format("2006-01-02 15:04:05.000"), strings.ToUpper(e.Level), e.Code, e.Message)
	}
	return ExitOK, nil
}

// supportBundle writes FILE and FILE.sig.
func (c *cmd) supportBundle(ctx context.Context) (int, error) {
	r, err := c.statusReport(ctx)
	if err != nil {
		return ExitFailed, err
	}
	in := diag.BundleInput{Status: r, Now: time.Now()}
	if r.Source == diag.SourceAgent {
		var lr diag.LogsReport
		if _, err := c.call(ctx, diag.Request{Cmd: diag.CmdLogs, Level: "debug", Limit: 5000}, &lr); err != nil {
			in.Status.Problems = append(in.Status.Problems, "logs: "+err.Error())
		}
		in.Logs = lr.Entries
	}
	if evs, err := diag.DiskJournal(ctx, c.dataDir, 1000); err != nil {
		in.Status.Problems = append(in.Status.Problems, "journal: "+err.Error())
	} else {
		in.Journal = evs
	}
	if c.cfgPath != "" {
		if b, err := os.ReadFile(c.cfgPath); err != nil {
			in.Status.Problems = append(in.Status.Problems, "config: "+err.Error())
		} else {
			in.Config = b
		}
	}
	key, cert, err := diag.DeviceCredentials(ctx, c.dataDir)
	if err != nil {
		return ExitFailed, fmt.Errorf("support bundle: cannot sign it: %w", err)
	}
	var buf bytes.Buffer
	man, err := diag.WriteBundle(&buf, in)
	if err != nil {
		return ExitFailed, err
	}
	out := c.out
	if out == "" {
		dev := man.DeviceID
		if dev == "" {
			dev = "unenrolled"
		}
		out = fmt.Sprintf("flotilla-support-%s-%s.tar.gz", dev, in.Now.UTC().Format("20060102T150405Z"))
	}
	sig := diag.Sign(buf.Bytes(), key, man.DeviceID, cert)
	sb, err := json.MarshalIndent(sig, "", "  ")
	if err != nil {
		return ExitFailed, err
	}
	if err := state.WriteFileAtomic(out, buf.Bytes(), 0o600); err != nil {
		return ExitFailed, err
	}
	if err := state.WriteFileAtomic(out+".sig", append(sb, '\n'), 0o644); err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		return c.printJSON(map[string]any{"bundle": out, "signature": out + ".sig", "sha256": sig.SHA256, "manifest": man})
	}
	fmt.Fprintf(c.env.Stdout, "support bundle %s (%d bytes, %d files, from the %s), signature %s.sig\n", out, buf.Len(), len(man.Files)+1, sourceName(r.Source), out)
	return ExitOK, nil
}

func sourceName(s string) string {
	if s == diag.SourceAgent {
		return "running agent"
	}
	return "on-disk state: the agent is not running"
}

func (c *cmd) verifyBundle(file string) (int, error) {
	b, err := readLimited(file, diag.MaxBundle)
	if err != nil {
		return ExitFailed, err
	}
	sigFile := c.sig
	if sigFile == "" {
		sigFile = file + ".sig"
	}
	sb, err := readLimited(sigFile, diag.MaxSignature)
	if err != nil {
		return ExitFailed, err
	}
	sig, err := diag.ParseSignature(sb)
	if err != nil {
		return ExitFailed, err
	}
	var trust diag.Trust
	if c.pubkey != "" {
		k, err := base64.StdEncoding.DecodeString(c.pubkey)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return ExitUsage, errors.New("-pubkey: not a base64 ed25519 public key")
		}
		trust.PublicKey = k
	}
	if c.caFile != "" {
		pemb, err := readLimited(c.caFile, 1<<20)
		if err != nil {
			return ExitFailed, err
		}
		trust.Roots = x509.NewCertPool()
		if !trust.Roots.AppendCertsFromPEM(pemb) {
			return ExitUsage, fmt.Errorf("-ca: no certificate in %s", c.caFile)
		}
	}
	v, err := diag.Verify(b, sig, trust)
	if err != nil {
		return ExitFailed, err
	}
	if c.asJSON {
		return c.printJSON(v)
	}
	fmt.Fprintf(c.env.Stdout, "OK: bundle of device %q; %s\n", v.DeviceID, v.How)
	if !v.Trusted {
		fmt.Fprintln(c.env.Stdout, "give -ca (the fleet CA) or -pubkey (the device key the control plane holds) to trust it")
	}
	return ExitOK, nil
}

func readLimited(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, n+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n {
		return nil, fmt.Errorf("%s: over %d bytes", path, n)
	}
	return b, nil
}
