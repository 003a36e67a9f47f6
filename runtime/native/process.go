package native

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Plugin is one runtime plugin process, supervised: it implements
// runtime.Runtime and runtime.Describer, and restarts the process when it
// dies, reloading its models.
type Plugin struct {
	path string
	cfg  Config

	mu      sync.RWMutex
	client  *plugin.Client
	rpc     flotillapb.RuntimeClient
	chans   *channels // Infer channels to the current process; nil on protocol 1
	gen     uint64    // process generation, bumped by every start
	up      bool
	info    runtime.Info
	models  map[*Model]struct{}
	crashes int
	closed  bool

	kick chan struct{}
	done chan struct{}
}

var (
	_ runtime.Runtime   = (*Plugin)(nil)
	_ runtime.Describer = (*Plugin)(nil)
)

// Start starts the plugin binary at path, negotiates its capabilities and
// supervises it until Close.
func Start(ctx context.Context, path string, cfg Config) (*Plugin, error) {
	cfg = cfg.withDefaults()
	p := &Plugin{path: path, cfg: cfg, models: map[*Model]struct{}{}, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	go p.supervise()
	return p, nil
}

// start runs a new process and makes it current.
func (p *Plugin) start(ctx context.Context) error {
	cmd := exec.Command(p.path)
	cmd.Env = append(os.Environ(), p.cfg.Env...)
	var chans *channels
	if channelsSupported && !p.cfg.grpcOnly {
		cs, peer, err := newChannels()
		if err != nil {
			return fmt.Errorf("native: plugin %s: %w", p.path, err)
		}
		defer peer.Close() // the process has its own copy
		chans = cs
		cmd.ExtraFiles = []*os.File{peer} // descriptor 3
		cmd.Env = append(cmd.Env, ChannelsEnv+"=3")
	}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: pluginSets(nil),
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           p.cfg.Logger.Named(filepath.Base(p.path)),
		StartTimeout:     p.cfg.StartTimeout,
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes)),
			grpc.WithInitialWindowSize(grpcWindowBytes), grpc.WithInitialConnWindowSize(grpcWindowBytes),
		},
	})
	rpc, info, err := handshake(ctx, client)
	if err == nil && chans != nil && client.NegotiatedVersion() < 2 {
		chans.close() // a protocol 1 plugin: gRPC only
		chans = nil
	}
	if err != nil {
		client.Kill()
		if chans != nil {
			chans.close()
		}
		return fmt.Errorf("native: plugin %s: %w", p.path, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		client.Kill()
		if chans != nil {
			chans.close()
		}
		return fmt.Errorf("%w: plugin closed", runtime.ErrUnavailable)
	}
	p.client, p.rpc, p.chans, p.info, p.up = client, rpc, chans, info, true
	p.gen++
	return nil
}

func handshake(ctx context.Context, client *plugin.Client) (flotillapb.RuntimeClient, runtime.Info, error) {
	cp, err := client.Client()
	if err != nil {
		return nil, runtime.Info{}, err
	}
	raw, err := cp.Dispense(pluginName)
	if err != nil {
		return nil, runtime.Info{}, err
	}
	rpc, ok := raw.(flotillapb.RuntimeClient)
	if !ok {
		return nil, runtime.Info{}, fmt.Errorf("dispensed %T, not a runtime client", raw)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	d, err := rpc.Describe(ctx, &flotillapb.DescribeRequest{})
	if err != nil {
		return nil, runtime.Info{}, fmt.Errorf("describe: %w", err)
	}
	if v := d.GetProtocolVersion(); v < minProtocolVersion || int(v) < client.NegotiatedVersion() {
		return nil, runtime.Info{}, fmt.Errorf("describes runtime protocol %d, negotiated %d", v, client.NegotiatedVersion())
	}
	if d.GetName() == "" {
		return nil, runtime.Info{}, errors.New("describe gave no runtime name")
	}
	return rpc, runtime.Info{Name: d.GetName(), Version: d.GetVersion(), ExecutionProviders: d.GetExecutionProviders()}, nil
}

// supervise restarts the process when it exits, with backoff, and reloads
// the models on the new one.
func (p *Plugin) supervise() {
	tick := time.NewTicker(p.cfg.PollInterval)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			return
		case <-tick.C:
		case <-p.kick:
		}
		p.mu.Lock()
		if p.closed || !p.up || !p.client.Exited() {
			p.mu.Unlock()
			continue
		}
		p.up = false
		p.crashes++
		old, oldChans := p.client, p.chans
		p.chans = nil
		p.mu.Unlock()
		old.Kill() // releases what go-plugin holds for the dead process
		if oldChans != nil {
			oldChans.close()
		}
		p.cfg.Logger.Warn("runtime plugin exited; restarting", "path", p.path, "crashes", p.Crashes())
		p.restart()
	}
}

func (p *Plugin) restart() {
	backoff := 100 * time.Millisecond
	for {
		err := p.start(context.Background())
		if err == nil {
			p.reload()
			return
		}
		p.cfg.Logger.Error("runtime plugin restart failed", "path", p.path, "error", err, "retry_in", backoff)
		select {
		case <-p.done:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// reload loads every model again on the current process.
func (p *Plugin) reload() {
	p.mu.RLock()
	rpc, gen := p.rpc, p.gen
	models := make([]*Model, 0, len(p.models))
	for m := range p.models {
		models = append(models, m)
	}
	p.mu.RUnlock()
	for _, m := range models {
		resp, err := rpc.Load(context.Background(), loadRequest(m.spec))
		if err != nil {
			p.cfg.Logger.Error("model reload failed", "path", p.path, "entry", m.spec.Entry, "error", err)
		}
		m.attach(gen, resp, fromStatus(err))
	}
}

// kickSupervisor makes the supervisor look at the process now.
func (p *Plugin) kickSupervisor() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Name is the runtime's name, from Describe.
func (p *Plugin) Name() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.info.Name
}

// Describe is what the plugin reported in the handshake.
func (p *Plugin) Describe() runtime.Info {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.info
}

// Path is the plugin binary.
func (p *Plugin) Path() string { return p.path }

// Crashes counts how often the process died under supervision.
func (p *Plugin) Crashes() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.crashes
}

// Pid is the current process's id; 0 while it is restarting.
func (p *Plugin) Pid() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.up {
		return 0
	}
	if rc := p.client.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

// conn is how to reach a running process: gRPC, and its Infer channels
// (nil for a protocol 1 plugin).
type conn struct {
	rpc   flotillapb.RuntimeClient
	chans *channels
	gen   uint64
}

// current returns the connection to the running process.
func (p *Plugin) current() (conn, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	switch {
	case p.closed:
		return conn{}, fmt.Errorf("%w: plugin %s closed", runtime.ErrUnavailable, p.info.Name)
	case !p.up:
		return conn{}, fmt.Errorf("%w: plugin %s is restarting", runtime.ErrUnavailable, p.info.Name)
	}
	return conn{p.rpc, p.chans, p.gen}, nil
}

// ProtocolVersion is the runtime protocol negotiated with the current
// process; 0 while it is restarting.
func (p *Plugin) ProtocolVersion() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.up {
		return 0
	}
	return p.client.NegotiatedVersion()
}

// Load loads a model in the plugin. The model is reloaded by itself after
// a plugin restart.
func (p *Plugin) Load(ctx context.Context, spec runtime.LoadSpec) (runtime.Model, error) {
	c, err := p.current()
	if err != nil {
		return nil, err
	}
	resp, err := c.rpc.Load(ctx, loadRequest(spec))
	if err != nil {
		p.kickSupervisor()
		return nil, fmt.Errorf("native: load %s: %w", spec.Entry, fromStatus(err))
	}
	m := &Model{p: p, spec: spec}
	m.attach(c.gen, resp, nil)
	p.mu.Lock()
	p.models[m] = struct{}{}
	p.mu.Unlock()
	return m, nil
}

// Close stops the plugin process; its models stop working.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.up = false
	client, chans := p.client, p.chans
	p.chans = nil
	close(p.done)
	p.mu.Unlock()
	client.Kill()
	if chans != nil {
		chans.close()
	}
	return nil
}

func loadRequest(spec runtime.LoadSpec) *flotillapb.LoadRequest {
	return &flotillapb.LoadRequest{Dir: spec.Dir, Entry: spec.Entry, Providers: spec.Providers, Options: spec.Options}
}
