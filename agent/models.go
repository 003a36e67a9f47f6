package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/inferapi"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/reap"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// DefaultInferAddr is the local inference API's loopback address when the
// configuration names none (flotilla-agent's default; agent.Config's zero
// value listens on no TCP port). 8580 stays clear of the ports KServe
// (8080), Triton (8000), TF Serving (8501) and Consul (8500) take.
const DefaultInferAddr = "127.0.0.1:8580"

// InferSocketName is the local inference API's unix socket in the data
// folder.
const InferSocketName = "infer.sock"

// ModelsConfig turns on the device's models: agent/lifecycle activates
// what agent/install stages (and what the sideload folder brings), the
// runtimes start when a model first needs them, and agent/inferapi serves
// the active releases locally.
type ModelsConfig struct {
	// PluginDir holds native runtime plugins (flotilla-runtime-<name>);
	// "" = none. It is watched: a plugin dropped in is available to the
	// next model that needs it, and a model that could not load for want
	// of it is loaded again.
	PluginDir string
	// ORTLib is the ONNX Runtime library the onnx plugin loads
	// (FLOTILLA_ORT_LIB in its environment); "" = the plugin's default.
	ORTLib string
	// PluginEnv is added to every plugin's environment.
	PluginEnv []string
	// Accelerators present on the device ("cuda", …): a bundle variant
	// needing one that is absent is passed over.
	Accelerators []string
	// WASMCacheDir is the wasm compilation cache; "" = DataDir/wasm-cache.
	WASMCacheDir string

	// InferAddr is the inference API's TCP address; it must be a loopback
	// one (the API has no authentication). "" = no TCP listener.
	InferAddr string
	// InferSocket is the inference API's unix socket path; "" = none
	// (flotilla-agent puts it at DataDir/infer.sock).
	InferSocket string
	// Infer tunes the inference API (its Models and Version are set here).
	Infer inferapi.Config

	// SideloadDir is the folder a field engineer drops bundles into
	// (docs/operator-guide.md has the layout); "" = no sideloading.
	SideloadDir string
	// SideloadWaiveDirector is the explicit local authorisation to install
	// a sideloaded bundle that carries no director metadata naming this
	// device. Release signatures are always required. Every waiver is
	// journaled and reported.
	SideloadWaiveDirector bool
	// SideloadSettle is how long a dropped folder must stay unchanged
	// before it is read (default 2 s): a copy in progress is not taken.
	SideloadSettle time.Duration

	// Lifecycle tunes activation and probation (Dir, Store, Runtimes,
	// Stats, Reporter and Logger are set here).
	Lifecycle lifecycle.Config
}

// models runs the device's models for one Run: the lifecycle, its
// runtimes and the inference API. It is the installer's Stager and Slots
// and the lifecycle's Reporter.
type models struct {
	a    *Agent
	cfg  ModelsConfig
	life *lifecycle.Lifecycle
	rts  *runtimes
	api  *inferapi.Server
	mon  *monitor        // records every inference the API serves
	buf  *metrics.Buffer // the records and the telemetry outbox; nil until openTelemetry
	lns  []net.Listener
	tcp  net.Addr

	changed chan struct{} // a model's state changed: report it

	activating sync.Mutex // PrepareSlot → fill the slot → Stage, one release at a time

	mu      sync.Mutex
	notices map[string]string // model → a notice to report (a sideload that waived the director)
}

// modelsDir is the lifecycle's slot folder in the data folder.
func modelsDir(dataDir string) string { return filepath.Join(dataDir, "models") }

// openModels reaps plugin processes an earlier run left, recovers the
// lifecycle and starts listening for the inference API. Nothing runs a
// model yet: runtimes start when the first model is loaded.
func (a *Agent) openModels(ctx context.Context, db *state.DB) (*models, error) {
	cfg := *a.cfg.Models
	log := a.log.With("component", "models")
	marker := reap.Marker(a.cfg.DataDir)
	if pids, err := reap.Orphans(marker, 5*time.Second); err != nil {
		log.Warn("reaping runtime plugins left by an earlier run", "err", err, "pids", pids)
	} else if len(pids) > 0 {
		log.Info("reaped runtime plugins left by an earlier run", "pids", pids)
		a.journal(ctx, db, "warn", "runtime.reaped", fmt.Sprintf("killed %d plugin processes left by an earlier run", len(pids)))
	}
	env := append([]string{marker}, cfg.PluginEnv...)
	if cfg.ORTLib != "" {
		env = append(env, "FLOTILLA_ORT_LIB="+cfg.ORTLib)
	}
	wcache := cfg.WASMCacheDir
	if wcache == "" {
		wcache = filepath.Join(a.cfg.DataDir, "wasm-cache")
	}
	m := &models{a: a, cfg: cfg, changed: make(chan struct{}, 1), notices: map[string]string{},
		rts: newRuntimes(cfg.PluginDir, env, wasm.Config{CacheDir: wcache}, log)}
	lc := cfg.Lifecycle
	lc.Dir, lc.Store, lc.Runtimes, lc.Reporter, lc.Logger = modelsDir(a.cfg.DataDir), db, m.rts, m, log
	if lc.Accelerators == nil {
		lc.Accelerators = cfg.Accelerators
	}
	life, err := lifecycle.Open(ctx, lc)
	if err != nil {
		m.rts.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	m.life = life
	ic := cfg.Infer
	m.mon = newMonitor(life, a.clock.Now)
	m.mon.fnCfg = monitorfn.Config{CacheDir: wcache}
	m.mon.slotDir = func(model, slot string) string { return filepath.Join(lc.Dir, model, slot) }
	m.mon.event = func(level, code, msg string) {
		log.Warn("monitor function", "code", code, "msg", msg)
		a.journal(context.Background(), db, level, code, msg)
	}
	ic.Models, ic.Version, ic.Logger = m.mon, a.cfg.Version, log
	m.api = inferapi.New(ic)
	if err := m.listen(); err != nil {
		m.close()
		return nil, err
	}
	return m, nil
}

// listen opens the inference API's listeners.
func (m *models) listen() error {
	if addr := m.cfg.InferAddr; addr != "" {
		if err := loopbackOnly(addr); err != nil {
			return err
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("agent: inference API: %w", err)
		}
		m.lns = append(m.lns, l)
		m.tcp = l.Addr()
	}
	if p := m.cfg.InferSocket; p != "" {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("agent: inference API: %w", err)
		}
		l, err := inferapi.ListenUnix(p)
		if err != nil {
			return err
		}
		m.lns = append(m.lns, l)
	}
	return nil
}

// loopbackOnly refuses an inference API address that is not loopback.
func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("agent: inference API address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("agent: inference API address %q is not a loopback address (the API has no authentication)", addr)
	}
	return nil
}

// run serves the inference API and watches the plugin folder until ctx
// is done.
func (m *models) run(ctx context.Context) {
	var wg sync.WaitGroup
	if len(m.lns) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.api.Serve(ctx, m.lns...); err != nil {
				m.a.log.Error("inference API stopped", "err", err)
			}
		}()
		m.a.log.Info("inference API listening", "tcp", m.tcp, "socket", m.cfg.InferSocket)
	}
	if m.cfg.PluginDir != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.watchPlugins(ctx)
		}()
	}
	wg.Wait()
}

// watchPlugins follows the plugin folder: a plugin dropped in becomes
// available, and models whose active release could not load are loaded
// again.
func (m *models) watchPlugins(ctx context.Context) {
	err := watchFolder(ctx, m.cfg.PluginDir, 200*time.Millisecond, func(paths []string) {
		for _, p := range paths {
			m.rts.pluginChanged(p)
		}
		if n := m.life.Reload(ctx); n > 0 {
			m.a.log.Info("models loaded after a runtime plugin became available", "models", n)
		}
	})
	if err != nil && ctx.Err() == nil {
		m.a.log.Warn("plugin folder not watched", "dir", m.cfg.PluginDir, "err", err)
	}
}

func (m *models) close() {
	for _, l := range m.lns {
		l.Close()
	}
	if m.life != nil {
		m.life.Close()
	}
	m.rts.Close()
	if m.cfg.InferSocket != "" {
		os.Remove(m.cfg.InferSocket)
	}
	if m.buf != nil {
		if err := m.buf.Close(); err != nil {
			m.a.log.Warn("closing the metrics buffer", "err", err)
		}
	}
	if m.mon != nil {
		m.mon.closeFunctions() // after the buffer's writer, their caller, stopped
	}
}

// ModelChanged implements lifecycle.Reporter: the session reports the new
// state when it can. It never blocks.
func (m *models) ModelChanged(lifecycle.State) {
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// ActiveSlot implements install.Slots: the installer unpacks into the
// other one.
func (m *models) ActiveSlot(model string) string {
	s, _ := m.life.State(model)
	return s.ActiveSlot
}

// OnStaged implements install.Stager: the bundle the installer verified
// and unpacked in its staging folder moves into the slot the lifecycle
// prepared (one rename; the data folder is one file system) and is
// activated: load, golden check, switch, probation. A release this device
// rejected is refused at once.
func (m *models) OnStaged(ctx context.Context, st install.Staged, man *pb.BundleManifest) error {
	if reason, ok := m.life.Rejected(st.Model, st.Digest); ok {
		return fmt.Errorf("%w: %s release %d: %s", lifecycle.ErrRejected, st.Model, st.Release, reason)
	}
	raw, err := stagedManifest(st)
	if err != nil {
		return err
	}
	return m.activate(ctx, man, raw, func(slot string) error {
		return os.Rename(st.Dir, slot)
	})
}

// stagedManifest reads the manifest the installer kept beside a staged
// slot, checked against the staged digest.
func stagedManifest(st install.Staged) ([]byte, error) {
	raw, err := readLimited(filepath.Join(filepath.Dir(st.Dir), st.Slot+".manifest"), pb.MaxManifestSize)
	if err != nil {
		return nil, fmt.Errorf("staged manifest: %w", err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != st.Digest {
		return nil, fmt.Errorf("staged manifest of %s release %d does not match its digest", st.Model, st.Release)
	}
	return raw, nil
}

// activate prepares the model's inactive slot, has fill put the verified
// bundle there, and stages it in the lifecycle.
func (m *models) activate(ctx context.Context, man *pb.BundleManifest, raw []byte, fill func(slot string) error) error {
	if man.GetKind() == pb.BundleKind_BUNDLE_KIND_AGENT {
		return m.stageAgent(ctx, man, fill) // a new agent binary (selfupdate.go)
	}
	m.activating.Lock()
	defer m.activating.Unlock()
	var size uint64
	for _, f := range man.GetFiles() {
		size += f.GetSize()
	}
	slot, err := m.life.PrepareSlot(ctx, man.GetName(), size)
	if err != nil {
		return err
	}
	if err := fill(slot); err != nil {
		os.RemoveAll(slot)
		return fmt.Errorf("agent: filling slot %s: %w", slot, err)
	}
	return m.life.Stage(ctx, raw)
}

// resume activates what the installer staged but the lifecycle never
// took (the agent stopped between the two): from the staging folder if it
// is still there, else unpacked again from the chunk store. A release the
// lifecycle rejected, or one at or below the active release, is left.
func (m *models) resume(ctx context.Context, inst *install.Installer) {
	staged := inst.Staged()
	names := make([]string, 0, len(staged))
	for n := range staged {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		st := staged[name]
		s, known := m.life.State(name)
		if known && (s.ActiveRelease >= st.Release || s.CandidateRelease == st.Release || s.RejectedRelease == st.Release) {
			continue
		}
		if _, rejected := m.life.Rejected(name, st.Digest); rejected {
			continue
		}
		raw, err := stagedManifest(st)
		if err != nil {
			m.a.log.Warn("staged release not resumable", "model", name, "release", st.Release, "err", err)
			continue
		}
		man := new(pb.BundleManifest)
		if err := wire.Decode(raw, pb.MaxManifestSize, man); err != nil {
			m.a.log.Warn("staged release not resumable", "model", name, "release", st.Release, "err", err)
			continue
		}
		m.a.log.Info("activating a release staged before a restart", "model", name, "release", st.Release)
		err = m.activate(ctx, man, raw, func(slot string) error {
			if _, err := os.Stat(st.Dir); err == nil {
				return os.Rename(st.Dir, slot)
			}
			return unpack.Unpack(ctx, inst.Chunks(), man, slot, unpack.Limits{})
		})
		if err != nil {
			m.a.log.Warn("resumed activation failed", "model", name, "release", st.Release, "err", err)
			inst.SetError(name, err.Error())
		}
	}
}

// setNotice keeps a notice to report for model (a sideload that waived
// the director check), until the next activation through the control
// plane replaces it.
func (m *models) setNotice(model, msg string) {
	m.mu.Lock()
	if msg == "" {
		delete(m.notices, model)
	} else {
		m.notices[model] = msg
	}
	m.mu.Unlock()
	m.ModelChanged(lifecycle.State{})
}

// report merges what the lifecycle runs (active release, health, errors,
// rollbacks) with what the installer staged and refused, per model,
// sorted by name.
func (m *models) report(staged []*pb.ModelState) []*pb.ModelState {
	byName := map[string]*pb.ModelState{}
	for _, s := range m.life.States() {
		byName[s.Name] = s.Proto()
	}
	for _, in := range staged {
		ms, ok := byName[in.GetName()]
		if !ok {
			byName[in.GetName()] = in
			continue
		}
		ms.StagedRelease, ms.StagedVersion, ms.StagedSlot, ms.StagedDigest = in.GetStagedRelease(), in.GetStagedVersion(), in.GetStagedSlot(), in.GetStagedDigest()
		ms.LastError = joinErrors(in.GetLastError(), ms.GetLastError())
	}
	m.mu.Lock()
	for name, note := range m.notices {
		ms, ok := byName[name]
		if !ok {
			ms = &pb.ModelState{Name: name}
			byName[name] = ms
		}
		ms.LastError = joinErrors(ms.GetLastError(), note)
	}
	m.mu.Unlock()
	out := make([]*pb.ModelState, 0, len(byName))
	for _, ms := range byName {
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// joinErrors joins the installer's and the lifecycle's last errors, once
// each, within the report's 1 KiB.
func joinErrors(a, b string) string {
	var s string
	switch {
	case a == "" || strings.Contains(a, b):
		s = a
		if s == "" {
			s = b
		}
	case b == "" || strings.Contains(b, a):
		s = b
	default:
		s = a + "; " + b
	}
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

// readLimited reads a regular file of at most limit bytes.
func readLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, over %d", path, fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// reportModels publishes the reported state after the lifecycle changes
// a model's state (coalesced; nothing while disconnected: serve reports
// on the next connect).
func (s *session) reportModels(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.models.changed:
		}
		if conn := s.current(); conn != nil {
			if err := s.publishReported(ctx, conn); err != nil {
				s.a.log.Warn("publish reported state", "err", err)
			}
		}
	}
}
