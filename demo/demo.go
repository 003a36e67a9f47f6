// Package demo runs Flotilla's one-command demo (make demo,
// cmd/flotilla-demo) and its short form in CI: a control plane on its
// embedded defaults and a handful of real flotilla-agent processes with
// different labels, all as child processes; the digits model built into
// a signed bundle with its drift baseline (from the training split) and
// released; a staged rollout of it; inference traffic from the test split
// through each agent's local KServe v2 API; then the same traffic shifted
// (a washed-out camera) so that drift shows.
//
// The operator's steps run through flotctl's own code (controlplane/
// flotctl.Run) against the server's API; the devices are the real agent
// binary with the real ONNX Runtime plugin. Close stops every child
// process: agents first, then the server.
package demo

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
)

// Device is one simulated device: a real agent process.
type Device struct {
	ID     string
	Labels map[string]string
	Env    []string // added to the agent's environment (GOGC, GOMEMLIMIT, …)
	Bin    string   // the agent binary; "" = BinDir's flotilla-agent (a baseline build, for comparisons)
}

// Config says what the demo runs. Zero values take the defaults of the
// one-command demo (DefaultConfig); the test shortens the times.
type Config struct {
	BinDir   string // flotilla-server, flotilla-agent and flotilla-runtime-onnx
	WorkDir  string // everything the demo writes; emptied at Start
	ModelDir string // the digits model: model.onnx, train.csv, test.csv, test_expected.csv
	ORTLib   string // libonnxruntime for the plugin; "" = the plugin's default

	APIPort, MQTTPort int // 0: free ports
	// InferPort and MetricsPort are the first agent's local ports; the
	// others take the next ones. 0: free ports.
	InferPort, MetricsPort int

	Devices []Device

	Window        time.Duration // the agents' summary window
	Heartbeat     time.Duration
	RolloutEvery  time.Duration // the server's rollout reconciliation
	Probation     time.Duration // the bundle's probation
	CanaryBake    time.Duration // the canary stage's bake
	MinRequests   int           // the rollout gates' and probation's minimum requests
	RatePerDevice float64       // inferences per second per device; 0 = unpaced

	Out io.Writer // progress; nil = discard
}

// DefaultConfig is the one-command demo's.
func DefaultConfig() Config {
	return Config{APIPort: 8443, MQTTPort: 8883, InferPort: 8580, MetricsPort: 9580,
		Devices: []Device{
			{ID: "demo-berlin-1", Labels: map[string]string{"site": "berlin", "ring": "canary", "hw": "pi5"}},
			{ID: "demo-berlin-2", Labels: map[string]string{"site": "berlin", "ring": "main", "hw": "pi5"}},
			{ID: "demo-lyon-1", Labels: map[string]string{"site": "lyon", "ring": "main", "hw": "jetson"}},
			{ID: "demo-lyon-2", Labels: map[string]string{"site": "lyon", "ring": "main", "hw": "jetson"}},
			{ID: "demo-porto-1", Labels: map[string]string{"site": "porto", "ring": "main", "hw": "pi4"}},
		},
		Window: 10 * time.Second, Heartbeat: 5 * time.Second, RolloutEvery: 2 * time.Second,
		Probation: 15 * time.Second, CanaryBake: 20 * time.Second, MinRequests: 50, RatePerDevice: 10}
}

func (c *Config) defaults() {
	d := DefaultConfig()
	if len(c.Devices) == 0 {
		c.Devices = d.Devices
	}
	if c.Window <= 0 {
		c.Window = d.Window
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = d.Heartbeat
	}
	if c.RolloutEvery <= 0 {
		c.RolloutEvery = d.RolloutEvery
	}
	if c.Probation <= 0 {
		c.Probation = d.Probation
	}
	if c.MinRequests <= 0 {
		c.MinRequests = d.MinRequests
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
}

// Demo is a running demo.
type Demo struct {
	cfg Config

	APIURL, MQTTURL, Fingerprint string
	TokenFile, CAFile            string
	RolloutID                    string
	Client                       *apiclient.Client
	// ConsoleUser and ConsolePassword log in to the console (an operator
	// made for the demo; the password is random, also in WorkDir/console-password).
	ConsoleUser, ConsolePassword string

	keys, bundleSrc, bundleStore string
	server                       *proc
	agents                       []*proc
	inferURLs, metricsURLs       []string
	rows                         *dataset
}

// proc is a child process.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start prepares everything and starts the processes: the server, the
// release keys, the bundle built, released and pushed, the agents
// enrolled and online, and the staged rollout created. It does not send
// traffic (Traffic does). On error what was started is stopped.
func Start(ctx context.Context, cfg Config) (d *Demo, err error) {
	cfg.defaults()
	d = &Demo{cfg: cfg}
	defer func() {
		if err != nil {
			d.Close()
			d = nil
		}
	}()
	for _, step := range []func(context.Context) error{d.prepare, d.makeKeys, d.startServer, d.consoleUser, d.releaseBundle,
		d.startAgents, d.createRollout} {
		if err := step(ctx); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// prepare empties the work folder and reads the test split.
func (d *Demo) prepare(context.Context) error {
	if err := os.RemoveAll(d.cfg.WorkDir); err != nil {
		return err
	}
	for _, sub := range []string{"server/release", "logs"} {
		if err := os.MkdirAll(filepath.Join(d.cfg.WorkDir, sub), 0o700); err != nil {
			return err
		}
	}
	var err error
	d.rows, err = loadDataset(d.cfg.ModelDir)
	return err
}

func (d *Demo) say(format string, args ...any) { fmt.Fprintf(d.cfg.Out, "== "+format+"\n", args...) }

// flotctl runs one flotctl command in-process against the demo's server
// and returns its standard output.
func (d *Demo) flotctl(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	env := map[string]string{"FLOTILLA_SERVER": d.APIURL, "FLOTILLA_CA_FILE": d.CAFile, "FLOTILLA_TOKEN_FILE": d.TokenFile}
	code := flotctl.Run(ctx, args, flotctl.Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return env[k] }})
	if code != 0 {
		return out.String(), fmt.Errorf("flotctl %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

func (d *Demo) makeKeys(ctx context.Context) error {
	d.keys = filepath.Join(d.cfg.WorkDir, "keys")
	d.say("release keys (offline root and targets keys, online key for the server): %s", d.keys)
	if _, err := d.flotctl(ctx, "keys", "generate", "-dir", d.keys, "-threshold", "2", "-count", "3"); err != nil {
		return err
	}
	online, _ := filepath.Glob(filepath.Join(d.keys, "online", "online-*.pem"))
	if len(online) != 1 {
		return fmt.Errorf("demo: online keys made: %v", online)
	}
	b, err := os.ReadFile(online[0])
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.cfg.WorkDir, "server", "release", filepath.Base(online[0])), b, 0o600)
}

var fingerprintLine = regexp.MustCompile(`CA fingerprint: *([0-9A-Fa-f:]+)`)

func (d *Demo) startServer(ctx context.Context) error {
	apiPort, err := portOr(d.cfg.APIPort)
	if err != nil {
		return err
	}
	mqttPort, err := portOr(d.cfg.MQTTPort)
	if err != nil {
		return err
	}
	dir := filepath.Join(d.cfg.WorkDir, "server")
	d.say("flotilla-server on its embedded defaults (broker, SQLite, its own CA): logs in %s", d.logPath("server"))
	stdout := &lineWatcher{want: fingerprintLine, found: make(chan string, 1)}
	d.server, err = d.spawn("server", filepath.Join(d.cfg.BinDir, "flotilla-server"), []string{
		"-data-dir", dir, "-listen", "127.0.0.1:" + strconv.Itoa(apiPort),
		"-mqtt-listen", "127.0.0.1:" + strconv.Itoa(mqttPort), "-heartbeat-interval", d.cfg.Heartbeat.String(),
		"-rollout-every", d.cfg.RolloutEvery.String(),
	}, nil, stdout)
	if err != nil {
		return err
	}
	select {
	case fp := <-stdout.found:
		d.Fingerprint = fp
	case <-d.server.done:
		return fmt.Errorf("demo: flotilla-server exited: %v (see %s)", d.server.err, d.logPath("server"))
	case <-time.After(time.Minute):
		return errors.New("demo: flotilla-server did not start within a minute")
	case <-ctx.Done():
		return ctx.Err()
	}
	d.APIURL = "https://127.0.0.1:" + strconv.Itoa(apiPort)
	d.MQTTURL = "mqtts://127.0.0.1:" + strconv.Itoa(mqttPort)
	d.TokenFile = filepath.Join(dir, "admin-token")
	d.CAFile = filepath.Join(dir, "pki", "ca.pem")
	tok, err := os.ReadFile(d.TokenFile)
	if err != nil {
		return fmt.Errorf("demo: admin token: %w", err)
	}
	tlsCfg, err := pki.PinnedClientTLS(d.Fingerprint)
	if err != nil {
		return err
	}
	d.Client = apiclient.New(d.APIURL, strings.TrimSpace(string(tok)), &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}})
	return nil
}

// consoleUser makes the console login the demo prints: an operator with
// a random password, kept in WorkDir/console-password (0600).
func (d *Demo) consoleUser(ctx context.Context) error {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	d.ConsoleUser, d.ConsolePassword = "demo", base64.RawURLEncoding.EncodeToString(b[:])
	pwFile := filepath.Join(d.cfg.WorkDir, "console-password")
	if err := os.WriteFile(pwFile, []byte(d.ConsolePassword+"\n"), 0o600); err != nil {
		return err
	}
	if _, err := d.flotctl(ctx, "users", "create", d.ConsoleUser, "-role", "operator", "-password-file", pwFile); err != nil {
		return fmt.Errorf("demo: console user: %w", err)
	}
	return nil
}

func (d *Demo) releaseBundle(ctx context.Context) error {
	var err error
	if d.bundleSrc, err = writeBundleSource(filepath.Join(d.cfg.WorkDir, "digits"), d.cfg, d.rows); err != nil {
		return err
	}
	d.bundleStore = d.bundleSrc + ".bundle"
	train := filepath.Join(d.cfg.ModelDir, "train.csv")
	d.say("bundle: digits release 1 from %s, drift baseline from %s", d.cfg.ModelDir, train)
	out, err := d.flotctl(ctx, "bundle", "build", d.bundleSrc, "-o", d.bundleStore, "-baseline", train, "-baseline-tensor", "pixels")
	if err != nil {
		return err
	}
	fmt.Fprint(d.cfg.Out, indent(out))
	manifests, _ := filepath.Glob(filepath.Join(d.bundleStore, "manifests", "*"))
	if len(manifests) != 1 {
		return fmt.Errorf("demo: manifests built: %v", manifests)
	}
	d.say("release: signed with the offline targets keys, pushed with the bundle's chunks")
	for _, args := range [][]string{
		{"release", "add", "-keys", d.keys, "-model", "digits", "-counter", "1", "-version", "1.0.0", manifests[0]},
		{"release", "push", "-keys", d.keys},
		{"bundle", "push", "-store", d.bundleStore},
	} {
		if _, err := d.flotctl(ctx, args...); err != nil {
			return err
		}
	}
	return nil
}

func (d *Demo) startAgents(ctx context.Context) error {
	n := len(d.cfg.Devices)
	created, err := d.Client.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "demo", MaxUses: n, TTL: "1h",
		Labels: map[string]string{"fleet": "demo"}})
	if err != nil {
		return fmt.Errorf("demo: enrol token: %w", err)
	}
	d.say("%d agents (real flotilla-agent processes), each with its own data folder and loopback ports", n)
	for i, dev := range d.cfg.Devices {
		infer, err := portOr(offset(d.cfg.InferPort, i))
		if err != nil {
			return err
		}
		metrics, err := portOr(offset(d.cfg.MetricsPort, i))
		if err != nil {
			return err
		}
		dir := filepath.Join(d.cfg.WorkDir, "devices", dev.ID)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		conf := filepath.Join(dir, "agent.toml")
		var b strings.Builder
		fmt.Fprintf(&b, "heartbeat_interval = %q\nmetrics_window = %q\n[labels]\n", d.cfg.Heartbeat, d.cfg.Window)
		for _, k := range sortedKeys(dev.Labels) {
			fmt.Fprintf(&b, "%s = %q\n", k, dev.Labels[k])
		}
		if err := os.WriteFile(conf, []byte(b.String()), 0o600); err != nil {
			return err
		}
		args := []string{"run", "-config", conf, "-data-dir", dir, "-server", d.APIURL, "-ca-fingerprint", d.Fingerprint,
			"-device-id", dev.ID, "-infer-addr", "127.0.0.1:" + strconv.Itoa(infer),
			"-metrics-addr", "127.0.0.1:" + strconv.Itoa(metrics), "-sideload-dir", "off"}
		if d.cfg.ORTLib != "" {
			args = append(args, "-ort-lib", d.cfg.ORTLib)
		}
		bin := dev.Bin
		if bin == "" {
			bin = filepath.Join(d.cfg.BinDir, "flotilla-agent")
		}
		p, err := d.spawn(dev.ID, bin, args,
			append([]string{"FLOTILLA_ENROL_TOKEN=" + created.Token}, dev.Env...), nil)
		if err != nil {
			return err
		}
		d.agents = append(d.agents, p)
		d.inferURLs = append(d.inferURLs, "http://127.0.0.1:"+strconv.Itoa(infer))
		d.metricsURLs = append(d.metricsURLs, "http://127.0.0.1:"+strconv.Itoa(metrics)+"/metrics")
		fmt.Fprintf(d.cfg.Out, "   %-14s labels %v  inference %s  metrics %s\n", dev.ID, dev.Labels, d.inferURLs[i], d.metricsURLs[i])
	}
	online := true
	deadline := time.Now().Add(time.Minute)
	for {
		devs, err := d.Client.ListDevices(ctx, apiclient.ListOptions{Online: &online})
		if err == nil && len(devs) >= n {
			return nil
		}
		for _, p := range d.agents {
			select {
			case <-p.done:
				return fmt.Errorf("demo: agent %s exited: %v (see %s)", p.name, p.err, d.logPath(p.name))
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("demo: %d of %d agents online after a minute (%v)", len(devs), n, err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// RolloutSpec is the staged rollout the demo creates: one canary, then
// every device of the demo fleet, gated on errors and latency.
func (d *Demo) RolloutSpec() string {
	return fmt.Sprintf(`name: digits 1.0.0 to the demo fleet
bundle: {model: digits, release: 1}
selector: {labels: {fleet: demo}}
stages:
  - {name: canary, count: 1, bake: %s}
  - {name: everyone, percent: 100}
gates:
  window: 2m
  min_devices_reporting: 1
  min_requests: %d
  error_rate: {max: 0.05}
failure_policy: pause
`, d.cfg.CanaryBake, d.cfg.MinRequests)
}

func (d *Demo) createRollout(ctx context.Context) error {
	spec := filepath.Join(d.cfg.WorkDir, "rollout.yaml")
	if err := os.WriteFile(spec, []byte(d.RolloutSpec()), 0o600); err != nil {
		return err
	}
	d.say("staged rollout (%s):\n%s", spec, indent(d.RolloutSpec()))
	out, err := d.flotctl(ctx, "rollout", "create", "-f", spec)
	if err != nil {
		return err
	}
	f := strings.Fields(out)
	if len(f) < 3 || f[0] != "created" {
		return fmt.Errorf("demo: rollout create said %q", out)
	}
	d.RolloutID = f[2]
	fmt.Fprint(d.cfg.Out, indent(out))
	return nil
}

// InferURLs are the agents' local inference API base URLs, in Devices
// order; MetricsURLs their /metrics.
func (d *Demo) InferURLs() []string   { return d.inferURLs }
func (d *Demo) MetricsURLs() []string { return d.metricsURLs }

// Howto is what the demo prints for the person watching it.
func (d *Demo) Howto() string {
	wd, _ := filepath.Abs(d.cfg.WorkDir)
	var b strings.Builder
	fmt.Fprintf(&b, `
The fleet is up and a staged rollout is running.
Console: %s/ (user %s, password %s; the browser will ask you to accept the demo CA's certificate)

In another shell:

  export FLOTILLA_SERVER=%s
  export FLOTILLA_CA_FILE=%s
  export FLOTILLA_TOKEN_FILE=%s
  bin/flotctl devices list
  bin/flotctl rollout watch %s
  bin/flotctl rollout show %s -devices
  bin/flotctl drift -model digits -since 5m
  bin/flotctl drift -model digits -selector site=lyon -since 5m
  bin/flotctl devices events %s
  curl -s --cacert $FLOTILLA_CA_FILE $FLOTILLA_SERVER/metrics | grep ^flotilla_
  curl -s %s | grep ^flotilla_agent_
  curl -s -X POST %s/v2/models/digits/infer -d '{"inputs":[{"name":"pixels","datatype":"FP32","shape":[1,64],"data":[%s]}]}'

Logs: %s. Ctrl-C stops everything.
`, d.APIURL, d.ConsoleUser, d.ConsolePassword, d.APIURL, abs(d.CAFile), abs(d.TokenFile), d.RolloutID, d.RolloutID, d.cfg.Devices[0].ID,
		d.metricsURLs[0], d.inferURLs[0], d.rows.sampleJSON(), filepath.Join(wd, "logs"))
	return b.String()
}

func abs(p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		return p
	}
	return a
}

func (d *Demo) logPath(name string) string { return filepath.Join(d.cfg.WorkDir, "logs", name+".log") }

// spawn starts a child process, its standard error (and output, unless
// stdout is given) into its log file.
func (d *Demo) spawn(name, bin string, args, env []string, stdout io.Writer) (*proc, error) {
	log, err := os.Create(d.logPath(name))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = log
	cmd.Stdout = log
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(log, stdout)
	}
	// Its own process group: a Ctrl-C in the terminal reaches the demo,
	// which stops the children in order. Should the demo itself be killed,
	// the kernel sends them SIGTERM (Pdeathsig).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("demo: start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM and waits; after grace it kills the process group.
func (p *proc) stop(grace time.Duration) {
	if p == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Close stops the agents (each publishes its OFFLINE status and stops its
// runtime plugins), then the server.
func (d *Demo) Close() {
	var wg sync.WaitGroup
	for _, p := range d.agents {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(15 * time.Second) }()
	}
	wg.Wait()
	d.server.stop(15 * time.Second)
}

// lineWatcher passes output through and reports the first match of want.
type lineWatcher struct {
	want  *regexp.Regexp
	found chan string
	buf   []byte
	done  bool
}

func (w *lineWatcher) Write(b []byte) (int, error) {
	if w.done {
		return len(b), nil
	}
	w.buf = append(w.buf, b...)
	sc := bufio.NewScanner(bytes.NewReader(w.buf))
	for sc.Scan() {
		if m := w.want.FindStringSubmatch(sc.Text()); m != nil {
			w.found <- m[1]
			w.done, w.buf = true, nil
			break
		}
	}
	if len(w.buf) > 1<<16 {
		w.buf = nil
	}
	return len(b), nil
}

func portOr(p int) (int, error) {
	if p > 0 {
		return p, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func offset(base, i int) int {
	if base == 0 {
		return 0
	}
	return base + i
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "   " + strings.ReplaceAll(s, "\n", "\n   ") + "\n"
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
