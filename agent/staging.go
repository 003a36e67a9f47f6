package agent

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Counters of the staging worker.
const (
	CounterStaged         = "bundles_staged"  // bundles staged in an inactive slot
	CounterStageRefused   = "bundles_refused" // metadata or bundles refused
	CounterReleaseUpdates = "release_updates" // release metadata received
)

// stagingRetry is how long the worker waits after a transient failure
// (incomplete fetch, manifest not there yet) before trying again.
const stagingRetry = 10 * time.Second

// stagingDir is the installer's folder in the data folder.
func stagingDir(dataDir string) string { return filepath.Join(dataDir, "bundles") }

// stager runs agent/install beside the session's serve loop, so a long
// download never blocks MQTT: the loop hands it the newest release
// metadata and director metadata, and it stages what they name. It
// outlives connections; its Link follows the session's current one.
type stager struct {
	s    *session
	cfg  install.Config
	kick chan struct{}

	mu       sync.Mutex
	inst     *install.Installer // opened on the first metadata to act on
	release  map[string][]byte
	director map[string][]byte
	changed  bool
}

func newStager(s *session, cfg install.Config) *stager {
	return &stager{s: s, cfg: cfg, kick: make(chan struct{}, 1)}
}

// installer opens the installer on first use (most agents of a fleet
// start with nothing to stage, and its chunk store is a database).
func (st *stager) installer(ctx context.Context) (*install.Installer, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inst != nil {
		return st.inst, nil
	}
	inst, err := install.Open(ctx, st.cfg)
	if err != nil {
		return nil, err
	}
	st.inst = inst
	return inst, nil
}

// models is the installer's part of the reported state (nil before it
// opened).
func (st *stager) models() []*flotillapb.ModelState {
	st.mu.Lock()
	inst := st.inst
	st.mu.Unlock()
	if inst == nil {
		return nil
	}
	return inst.Models()
}

func (st *stager) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.inst != nil {
		st.inst.Close()
	}
}

func (st *stager) poke() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

// setRelease takes new release metadata; setDirector the accepted desired
// state's director metadata.
func (st *stager) setRelease(md map[string][]byte) {
	st.mu.Lock()
	st.release, st.changed = md, true
	st.mu.Unlock()
	st.poke()
}

func (st *stager) setDirector(md map[string][]byte) {
	if len(md) == 0 {
		return // no assignment: nothing to stage, nothing to undo
	}
	st.mu.Lock()
	st.director, st.changed = md, true
	st.mu.Unlock()
	st.poke()
}

// run stages until ctx is done: after each change of input, after each
// reconnect (poke), and again after a transient failure.
func (st *stager) run(ctx context.Context) {
	defer st.close()
	var retry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.kick:
		case <-retry:
		}
		retry = nil
		st.mu.Lock()
		rel, dir, changed := st.release, st.director, st.changed
		st.changed = false
		st.mu.Unlock()
		if len(rel) == 0 || len(dir) == 0 || st.s.current() == nil {
			continue
		}
		transient := st.apply(ctx, rel, dir, changed)
		if transient {
			retry = st.s.a.clock.After(stagingRetry)
		}
	}
}

// apply runs one Apply and reports; it returns whether to retry.
func (st *stager) apply(ctx context.Context, rel, dir map[string][]byte, changed bool) bool {
	a := st.s.a
	inst, err := st.installer(ctx)
	if err != nil {
		// The agent keeps serving its running models; staging waits.
		a.log.Error("bundle staging unavailable", "err", err)
		return true
	}
	if m := st.s.models; m != nil {
		m.resume(ctx, inst) // what was staged before a restart but never activated
	}
	outs, err := inst.Apply(ctx, sessionLink{st.s}, rel, dir)
	report := false
	retry := false
	if err != nil {
		a.count(CounterStageRefused)
		if changed { // log and report a refusal once per input
			a.log.Warn("bundle metadata refused", "err", err)
			a.journal(ctx, st.s.db, "error", "bundle.refused", err.Error())
			for _, m := range refusedModels(inst) {
				inst.SetError(m, err.Error())
			}
			report = true
		}
	}
	for _, o := range outs {
		report = true
		switch {
		case o.Err == nil:
			a.count(CounterStaged)
			a.journal(ctx, st.s.db, "info", "bundle.staged", fmt.Sprintf("%s release %d in slot %s", o.Model, o.Release, o.Staged.Slot))
		case transient(o.Err):
			retry = true
			a.log.Info("bundle staging will resume", "model", o.Model, "release", o.Release, "err", o.Err)
		default:
			a.count(CounterStageRefused)
			a.journal(ctx, st.s.db, "error", "bundle.refused", fmt.Sprintf("%s release %d: %v", o.Model, o.Release, o.Err))
		}
	}
	if report {
		if conn := st.s.current(); conn != nil {
			if err := st.s.publishReported(ctx, conn); err != nil {
				a.log.Warn("publish reported state", "err", err)
			}
		}
	}
	return retry
}

func transient(err error) bool {
	return errors.Is(err, install.ErrManifestTimeout) || errors.Is(err, context.Canceled) || errors.Is(err, fetch.ErrIncomplete)
}

// refusedModels names the models a refusal of the metadata as a whole is
// reported under: those staged, or "*" while none is.
func refusedModels(inst *install.Installer) []string {
	var out []string
	for m := range inst.Staged() {
		out = append(out, m)
	}
	if len(out) == 0 {
		out = append(out, "*")
	}
	return out
}

// sessionLink is install.Link over the session's current connection;
// messages on its subscriptions bypass the inbox (routes).
type sessionLink struct{ s *session }

func (l sessionLink) Subscribe(ctx context.Context, name string, qos byte, deliver func([]byte)) error {
	conn := l.s.current()
	if conn == nil {
		return errNotConnected
	}
	l.s.route(name, deliver)
	if err := conn.Subscribe(ctx, map[string]byte{name: qos}); err != nil {
		l.s.route(name, nil)
		return err
	}
	return nil
}

func (l sessionLink) Unsubscribe(ctx context.Context, name string) error {
	defer l.s.route(name, nil)
	conn := l.s.current()
	if conn == nil {
		return errNotConnected
	}
	return conn.Unsubscribe(ctx, name)
}

func (l sessionLink) Publish(ctx context.Context, name string, qos byte, payload []byte) error {
	conn := l.s.current()
	if conn == nil {
		return errNotConnected
	}
	return conn.Publish(ctx, Message{Topic: name, Payload: payload, QoS: qos})
}

var errNotConnected = errors.New("mqtt: not connected")

// onReleaseMeta takes the release repository's retained metadata.
func (s *session) onReleaseMeta(m Message) {
	if len(m.Payload) == 0 {
		return
	}
	var rm flotillapb.ReleaseMetadata
	if err := wire.DecodeTopic(topic.ReleaseMeta, m.Payload, &rm); err != nil {
		s.drop(m, err)
		return
	}
	s.a.count(CounterReleaseUpdates)
	s.stage.setRelease(rm.GetMetadata())
}
