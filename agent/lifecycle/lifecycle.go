package lifecycle

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/modelstats"
	"github.com/flotilla-edge/flotilla/agent/state"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Errors callers branch on with errors.Is.
var (
	ErrNotFound     = errors.New("lifecycle: no such model")
	ErrRejected     = errors.New("lifecycle: release rejected")
	ErrOlderRelease = errors.New("lifecycle: release is not newer than the active one")
	ErrNotPrepared  = errors.New("lifecycle: slot not prepared")
	ErrInvalid      = errors.New("lifecycle: invalid bundle")
	ErrNoVariant    = errors.New("lifecycle: no runtime variant fits this device")
	// ErrRuntimeMissing (with ErrNoVariant): a variant would fit once its
	// runtime's plugin is installed. The release stays staged, waiting,
	// and Reload activates it when a plugin arrives.
	ErrRuntimeMissing = errors.New("lifecycle: waiting for a runtime to be installed")
	ErrQuota          = errors.New("lifecycle: slot disk quota exceeded")
	ErrClosed         = errors.New("lifecycle: closed")
)

// Phases of a model's record.
const (
	PhaseIdle      = "idle"      // Active (if any) is committed; nothing in flight
	PhaseStaged    = "staged"    // Candidate is unpacked; load and golden check pending
	PhaseProbation = "probation" // Active was switched to; Previous is the rollback target
)

// Steps are the journaled steps, in the journal as "model.<step>" and
// passed to Config.StepHook after each is durable.
const (
	StepSuperseded = "superseded"
	StepStaged     = "staged"
	StepLoading    = "loading"
	StepLoaded     = "loaded" // not journaled: a crash point between load and check
	StepChecked    = "checked"
	StepSwitched   = "switched"
	StepCommitted  = "committed"
	StepRolledBack = "rolledback"
	StepRejected   = "rejected"
	StepRecovered  = "recovered"
)

// Steps lists every step StepHook may be called with.
var Steps = []string{StepSuperseded, StepStaged, StepLoading, StepLoaded, StepChecked, StepSwitched,
	StepCommitted, StepRolledBack, StepRejected, StepRecovered}

// Store keeps the lifecycle's journal; agent/state.DB is one.
type Store interface {
	Models(ctx context.Context) ([]state.ModelRecord, error)
	SaveModel(ctx context.Context, rec state.ModelRecord, ev state.Event) error
}

// Reporter hears every change of a model's state (for the reported state
// and diagnostics). It must not block.
type Reporter interface {
	ModelChanged(State)
}

// Config sets up a Lifecycle.
type Config struct {
	// Dir holds the slots, Dir/<model>/a and Dir/<model>/b. The lifecycle
	// owns it: anything there it does not reference is collected.
	Dir      string
	Store    Store
	Runtimes Runtimes
	// Accelerators present on this device ("cuda", "coral", …), from
	// firmware/accel; a variant needing one that is absent is skipped.
	Accelerators []string
	// Platform is GOOS/GOARCH for variants' platforms (default this
	// binary's).
	Platform string
	// Stats receives every request's figures (default a new registry).
	Stats    *modelstats.Registry
	Reporter Reporter
	Logger   *slog.Logger // nil = discard
	// QuotaBytes caps the bytes of all slots together; 0 = no cap.
	QuotaBytes int64
	// DefaultPolicy fills what a bundle's ProbationPolicy leaves zero.
	DefaultPolicy Policy
	// CheckInterval is how often probation is judged (default 1 s).
	CheckInterval time.Duration
	// MaxAttempts caps activations of one candidate interrupted by a
	// crash before it is rejected, so a model that kills the agent while
	// loading cannot make it crash-loop (default 3).
	MaxAttempts int
	// GoldenTimeout bounds the golden check's inference (default 30 s).
	GoldenTimeout time.Duration
	// ShadowConcurrency caps shadow calls in flight per model; a request
	// arriving beyond it is not shadowed (default 4).
	ShadowConcurrency int
	// StepHook, when set, is called after each journaled step is durable,
	// with the step's name. For tests: the crash test dies there.
	StepHook func(step string)
}

func (c Config) withDefaults() Config {
	if c.Platform == "" {
		c.Platform = goruntime.GOOS + "/" + goruntime.GOARCH
	}
	if c.Stats == nil {
		c.Stats = modelstats.NewRegistry()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.DefaultPolicy = c.DefaultPolicy.orDefaults(builtinPolicy)
	if c.CheckInterval <= 0 {
		c.CheckInterval = time.Second
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 3
	}
	if c.GoldenTimeout <= 0 {
		c.GoldenTimeout = 30 * time.Second
	}
	if c.ShadowConcurrency <= 0 {
		c.ShadowConcurrency = 4
	}
	return c
}

// Lifecycle activates, serves, judges and rolls back the device's models.
// It is safe for concurrent use.
type Lifecycle struct {
	cfg Config

	mu     sync.Mutex
	models map[string]*entry
	closed bool
	done   chan struct{}
	wg     sync.WaitGroup
}

// Open recovers every model from the journal: it loads the active
// release, resumes a probation where it stood, resumes or gives up an
// interrupted activation, and collects slots nothing references.
func Open(ctx context.Context, cfg Config) (*Lifecycle, error) {
	cfg = cfg.withDefaults()
	if cfg.Dir == "" || cfg.Store == nil || cfg.Runtimes == nil {
		return nil, errors.New("lifecycle: Dir, Store and Runtimes are required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("lifecycle: %w", err)
	}
	recs, err := cfg.Store.Models(ctx)
	if err != nil {
		return nil, fmt.Errorf("lifecycle: %w", err)
	}
	l := &Lifecycle{cfg: cfg, models: map[string]*entry{}, done: make(chan struct{})}
	for _, rec := range recs {
		l.models[rec.Name] = l.newEntry(rec)
	}
	if err := l.collectStrays(); err != nil {
		cfg.Logger.Warn("collecting stray slots", "error", err)
	}
	for _, rec := range recs {
		l.recover(ctx, l.models[rec.Name])
	}
	return l, nil
}

// Close stops probation watchers and unloads every model. Runtimes stay
// open: they belong to the caller.
func (l *Lifecycle) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.done)
	es := make([]*entry, 0, len(l.models))
	for _, e := range l.models {
		es = append(es, e)
	}
	l.mu.Unlock()
	l.wg.Wait()
	for _, e := range es {
		e.op.Lock()
		e.cur.Store(nil)
		for slot, ld := range e.loaded {
			ld.close()
			delete(e.loaded, slot)
		}
		e.op.Unlock()
	}
	return nil
}

// Stats is the registry every request's figures go to.
func (l *Lifecycle) Stats() *modelstats.Registry { return l.cfg.Stats }

func (l *Lifecycle) entry(name string, create bool) (*entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	e, ok := l.models[name]
	if !ok {
		if !create {
			return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
		}
		e = l.newEntry(state.ModelRecord{Name: name, Phase: PhaseIdle})
		l.models[name] = e
	}
	return e, nil
}

// Names lists the models the lifecycle knows, sorted.
func (l *Lifecycle) Names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.models))
	for n := range l.models {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// slotDir is the folder of one slot.
func (l *Lifecycle) slotDir(name, slot string) string { return filepath.Join(l.cfg.Dir, name, slot) }

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// PrepareSlot makes way for a new release of model name needing size
// bytes and returns the inactive slot's folder to unpack it into (with
// agent/unpack). A release still being activated or on probation is
// superseded first: a staged one is dropped, one on probation reverted to
// the release before it (neither counts as a rejection) or, when it is
// the model's first release, committed. The slot's parent
// folder exists; the slot itself does not.
func (l *Lifecycle) PrepareSlot(ctx context.Context, name string, size uint64) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	e, err := l.entry(name, true)
	if err != nil {
		return "", err
	}
	e.op.Lock()
	defer e.op.Unlock()
	switch {
	case e.rec.Phase == PhaseStaged:
		l.dropCandidate(ctx, e, StepSuperseded, "superseded by a newer release", false)
	case e.rec.Phase == PhaseProbation && e.rec.Previous.Empty():
		// The model's first release: there is nothing to revert to, and
		// the newer one may yet fail its check. It stays, committed.
		l.commit(ctx, e)
	case e.rec.Phase == PhaseProbation:
		l.rollback(ctx, e, "superseded by a newer release", false)
	}
	slot := other(e.rec.Active.Slot)
	dir := l.slotDir(name, slot)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("lifecycle: clear slot: %w", err)
	}
	if err := l.checkQuota(dir, int64(size)); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("lifecycle: %w", err)
	}
	e.prepared = slot
	return dir, nil
}

// Stage activates the bundle whose encoded manifest is raw, already
// unpacked into the slot PrepareSlot returned: it is journaled as staged,
// loaded with the runtime variant chosen for this device, golden-checked
// and switched to, and then on probation (judged in the background). It
// returns once the switch is durable, or with an error wrapping
// ErrRejected when the release failed its load or golden check (it is
// then remembered: staging it again fails at once, until another release
// is staged). Staging the active release again does nothing.
func (l *Lifecycle) Stage(ctx context.Context, raw []byte) error {
	m, digest, err := decodeManifest(raw)
	if err != nil {
		return err
	}
	name := m.GetName()
	e, err := l.entry(name, true)
	if err != nil {
		return err
	}
	e.op.Lock()
	defer e.op.Unlock()
	switch {
	case digest == e.rec.Active.Digest:
		e.prepared = ""
		return nil
	case digest == e.rec.RejectedDigest:
		return fmt.Errorf("%w: %s release %d: %s", ErrRejected, name, m.GetRelease(), e.rec.RejectedReason)
	case m.GetRelease() <= e.rec.Active.Release:
		return fmt.Errorf("%w: %s release %d, active %d", ErrOlderRelease, name, m.GetRelease(), e.rec.Active.Release)
	case e.prepared == "" || e.prepared == e.rec.Active.Slot || e.rec.Phase != PhaseIdle:
		return fmt.Errorf("%w: call PrepareSlot for %s and unpack into it first", ErrNotPrepared, name)
	}
	slot := e.prepared
	e.prepared = ""
	dir := l.slotDir(name, slot)
	if err := checkSlot(dir, m); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalid, name, err)
	}
	if err := l.checkQuota(dir, 0); err != nil {
		os.RemoveAll(dir)
		return err
	}
	rec := e.rec
	rec.Phase = PhaseStaged
	rec.Candidate = state.ModelSlot{Slot: slot, Release: m.GetRelease(), Version: m.GetVersion(), Digest: digest, Manifest: raw}
	rec.Attempts = 0
	if rec.RejectedDigest != "" { // a different release is desired: forget the rejected one
		rec.RejectedDigest, rec.RejectedRel, rec.RejectedReason = "", 0, ""
	}
	if err := l.save(ctx, e, rec, StepStaged, "info", fmt.Sprintf("%s release %d (%s) staged in slot %s", name, m.GetRelease(), m.GetVersion(), slot)); err != nil {
		return err
	}
	return l.activate(ctx, e)
}

// Rejected says whether the release with this manifest digest was
// rejected on this device, and why: the caller need not fetch it again.
func (l *Lifecycle) Rejected(name, digest string) (reason string, rejected bool) {
	e, err := l.entry(name, false)
	if err != nil {
		return "", false
	}
	e.op.Lock()
	defer e.op.Unlock()
	if digest != "" && digest == e.rec.RejectedDigest {
		return e.rec.RejectedReason, true
	}
	return "", false
}

func decodeManifest(raw []byte) (*pb.BundleManifest, string, error) {
	m := &pb.BundleManifest{}
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		return nil, "", fmt.Errorf("%w: manifest: %w", ErrInvalid, err)
	}
	if err := m.Validate(); err != nil {
		return nil, "", fmt.Errorf("%w: manifest: %w", ErrInvalid, err)
	}
	if m.GetKind() != pb.BundleKind_BUNDLE_KIND_MODEL {
		return nil, "", fmt.Errorf("%w: %s is a %v bundle, not a model", ErrInvalid, m.GetName(), m.GetKind())
	}
	sum := sha256.Sum256(raw)
	return m, hex.EncodeToString(sum[:]), nil
}

// checkSlot checks that every file of m is in dir with its size: the
// caller unpacked and verified it, this only catches a wrong folder.
func checkSlot(dir string, m *pb.BundleManifest) error {
	for _, f := range m.GetFiles() {
		fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(f.GetPath())))
		if err != nil {
			return fmt.Errorf("slot: %w", err)
		}
		if !fi.Mode().IsRegular() || uint64(fi.Size()) != f.GetSize() {
			return fmt.Errorf("slot: %s is not the manifest's file (%d bytes, want %d)", f.GetPath(), fi.Size(), f.GetSize())
		}
	}
	return nil
}

func validName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 128 {
		return fmt.Errorf("%w: model name %q", ErrInvalid, name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("%w: model name %q", ErrInvalid, name)
		}
	}
	return nil
}

// save makes rec durable with its journal entry, then publishes it.
func (l *Lifecycle) save(ctx context.Context, e *entry, rec state.ModelRecord, step, level, msg string) error {
	rec.UpdatedAt = time.Now()
	// The journal must not be skipped because the caller gave up: a step
	// half-taken in memory but not on disk is what recovery cannot see.
	ctx = context.WithoutCancel(ctx)
	if err := l.cfg.Store.SaveModel(ctx, rec, state.Event{Level: level, Code: "model." + step, Message: msg}); err != nil {
		return fmt.Errorf("lifecycle: journal %s: %w", step, err)
	}
	e.setRec(rec)
	l.cfg.Logger.Info(msg, "model", rec.Name, "step", step)
	if l.cfg.Reporter != nil {
		l.cfg.Reporter.ModelChanged(stateOf(rec))
	}
	l.hook(step)
	return nil
}

func (l *Lifecycle) hook(step string) {
	if l.cfg.StepHook != nil {
		l.cfg.StepHook(step)
	}
}
