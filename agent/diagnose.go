package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// ErrNotRunning is returned by the diagnostic hooks that need a part of
// Run that is not running now (no state open, no models, no connection).
var ErrNotRunning = errors.New("agent: not running")

// Internals are the live parts of a running agent that on-site
// diagnostics (agent/diag) read. A field is nil or zero while Run does not
// hold it: before Run, without Models, between connections.
type Internals struct {
	DataDir   string
	Version   string
	DB        *state.DB            // the state database Run holds
	Lifecycle *lifecycle.Lifecycle // with Models
	Telemetry *metrics.Buffer      // with Models, once opened
	Runtimes  []RuntimeStatus      // with Models
	Facts     *flotillapb.Facts    // the facts the birth carries
	// ClockSkew estimates this device's clock minus the control plane's:
	// the receipt time of the last command less the time it was issued
	// (an upper bound: it includes the delivery delay). SkewMeasured is
	// zero when no command has come yet.
	ClockSkew    time.Duration
	SkewMeasured time.Time
	Connected    bool // a broker connection is being served
	// Quotas are the configured byte caps of what the agent keeps in
	// DataDir: "bundles" (the chunk store), "metrics" (the telemetry
	// buffer) and, when set, "models" (all slots); 0 = none.
	Quotas map[string]int64
}

// RuntimeStatus is one runtime a model may ask for.
type RuntimeStatus struct {
	Name    string
	Started bool   // its plugin process (or the wasm engine) is running
	Failed  string // why its plugin last failed to start; "" = it did not
}

// diagHooks is what Run holds that diagnostics read; guarded by its mutex,
// apart from Agent.mu so that a slow diagnostic never holds up the agent.
type diagHooks struct {
	mu     sync.Mutex
	db     *state.DB
	models *models
	sess   *session
	skew   time.Duration
	skewAt time.Time
	remote RemoteDiag
	// bundler builds support bundles; upload is the one going up
	// (supportupload.go).
	bundler SupportBundler
	upload  *supportUpload
	// restart ends Run with a cause (ErrRestartForUpdate).
	restart context.CancelCauseFunc
}

// RemoteDiag answers a diag command from the control plane with its
// output (JSON, at most MaxCommandOutput bytes). flotilla-agent sets it to
// agent/diag's server; without it the command is answered "not served".
type RemoteDiag func(ctx context.Context, d *flotillapb.Diag) ([]byte, error)

// MaxCommandOutput is the most a command result's output may carry.
const MaxCommandOutput = 64 << 10

// SetRemoteDiag sets what answers diag commands. Safe at any time.
func (a *Agent) SetRemoteDiag(f RemoteDiag) {
	a.dg.mu.Lock()
	a.dg.remote = f
	a.dg.mu.Unlock()
}

// remoteDiag answers one diag command.
func (a *Agent) remoteDiag(ctx context.Context, d *flotillapb.Diag) ([]byte, error) {
	a.dg.mu.Lock()
	f := a.dg.remote
	a.dg.mu.Unlock()
	if f == nil {
		return nil, errors.New("diagnostics are not served by this agent")
	}
	out, err := f(ctx, d)
	if err != nil {
		return nil, err
	}
	if len(out) > MaxCommandOutput {
		return nil, fmt.Errorf("diag %s answer is %d bytes, over %d", d.GetWhat(), len(out), MaxCommandOutput)
	}
	return out, nil
}

// attach records what Run opened (nil for what it did not); detach clears it.
func (a *Agent) attach(db *state.DB, m *models, s *session) {
	a.dg.mu.Lock()
	defer a.dg.mu.Unlock()
	if db != nil {
		a.dg.db = db
	}
	if m != nil {
		a.dg.models = m
	}
	if s != nil {
		a.dg.sess = s
	}
}

func (a *Agent) detach() {
	a.dg.mu.Lock()
	a.dg.db, a.dg.models, a.dg.sess = nil, nil, nil
	a.dg.mu.Unlock()
}

// noteIssued measures clock skew from a command issued at issuedMS (the
// control plane's clock) and received now.
func (a *Agent) noteIssued(issuedMS int64) {
	if issuedMS <= 0 {
		return
	}
	now := a.clock.Now()
	a.dg.mu.Lock()
	a.dg.skew, a.dg.skewAt = now.Sub(time.UnixMilli(issuedMS)), now
	a.dg.mu.Unlock()
}

// Internals returns the live parts of the agent for diagnostics.
func (a *Agent) Internals() Internals {
	a.dg.mu.Lock()
	db, m, s := a.dg.db, a.dg.models, a.dg.sess
	in := Internals{DataDir: a.cfg.DataDir, Version: a.cfg.Version, DB: db, ClockSkew: a.dg.skew, SkewMeasured: a.dg.skewAt}
	a.dg.mu.Unlock()
	if m != nil {
		in.Lifecycle = m.life
		in.Telemetry = m.buf
		in.Runtimes = m.rts.describe(m.cfg.PluginDir)
	}
	if s != nil {
		in.Connected = s.current() != nil
	}
	in.Facts = a.facts()
	in.Quotas = map[string]int64{"bundles": chunkstore.DefaultQuota}
	if q := a.cfg.ChunkQuotaBytes; q > 0 {
		in.Quotas["bundles"] = q
	}
	if a.cfg.Models != nil {
		in.Quotas["metrics"] = 64 << 20 // agent/metrics' default
		if q := a.cfg.Telemetry.QuotaBytes; q > 0 {
			in.Quotas["metrics"] = q
		}
		if q := a.cfg.Models.Lifecycle.QuotaBytes; q > 0 {
			in.Quotas["models"] = q
		}
	}
	return in
}

// describe lists the runtimes a model may ask for and whether each runs.
func (r *runtimes) describe(dir string) []RuntimeStatus {
	names := runtimeNames(dir)
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]RuntimeStatus, 0, len(names))
	for _, n := range names {
		rs := RuntimeStatus{Name: n}
		if n == "wasm" {
			rs.Started = r.wasm != nil
		} else if _, ok := r.plugins[n]; ok {
			rs.Started = true
		}
		out = append(out, rs)
	}
	for path, f := range r.failed {
		for i := range out {
			if out[i].Name == pluginName(path) && !out[i].Started {
				out[i].Failed = f.err.Error()
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pluginName is the runtime a plugin binary provides.
func pluginName(path string) string {
	return strings.TrimPrefix(filepath.Base(path), native.BinaryPrefix)
}

// Rollback rolls model name back to its previous release at once, for a
// person on site: journaled (the lifecycle's model.rolledback, plus
// diag.rollback naming who asked) and reported to the control plane at
// once when connected, else on the next connect.
func (a *Agent) Rollback(ctx context.Context, name, reason string) (lifecycle.State, error) {
	a.dg.mu.Lock()
	db, m := a.dg.db, a.dg.models
	a.dg.mu.Unlock()
	if m == nil {
		return lifecycle.State{}, fmt.Errorf("%w: no models are running", ErrNotRunning)
	}
	st, err := m.life.Rollback(ctx, name, reason)
	if err != nil {
		return st, err
	}
	if db != nil {
		a.journal(ctx, db, "warn", "diag.rollback", fmt.Sprintf("%s rolled back locally to release %d: %s", name, st.ActiveRelease, reason))
	}
	return st, nil
}

// Resync drops the agent's subscriptions to its desired state and the
// fleet's release metadata and takes them again, so the broker delivers
// the retained copies anew (the staging worker looks at them again), and
// republishes birth, status and reported state. It needs a connection.
func (a *Agent) Resync(ctx context.Context) error {
	a.dg.mu.Lock()
	db, s := a.dg.db, a.dg.sess
	a.dg.mu.Unlock()
	if s == nil {
		return fmt.Errorf("%w: no session", ErrNotRunning)
	}
	conn := s.current()
	if conn == nil {
		return fmt.Errorf("%w: not connected to the broker; the desired state is read again on the next connect", ErrNotRunning)
	}
	desired := s.scheme.Device(topic.Desired, s.id.DeviceID)
	meta := s.scheme.Fleet(topic.ReleaseMeta)
	if err := conn.Unsubscribe(ctx, desired, meta); err != nil {
		return fmt.Errorf("resync: unsubscribe: %w", err)
	}
	if err := conn.Subscribe(ctx, map[string]byte{desired: 1, meta: 1}); err != nil {
		return fmt.Errorf("resync: subscribe: %w", err)
	}
	s.stage.poke()
	if db != nil {
		a.journal(ctx, db, "info", "diag.resync", "desired state and release metadata fetched again on request")
	}
	return s.resync(ctx, conn)
}

// clipText keeps an error within a message's text limit (1 KiB).
func clipText(s string) string {
	if len(s) > 1024 {
		return s[:1024]
	}
	return s
}
