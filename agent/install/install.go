package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/trust"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Errors callers branch on with errors.Is (besides agent/trust's and
// agent/unpack's sentinels, and fetch.ErrIncomplete).
var (
	ErrNoReleaseRoot    = errors.New("no release root was provisioned at enrolment")
	ErrManifestTimeout  = errors.New("manifest did not arrive")
	ErrManifestMismatch = errors.New("manifest does not describe the signed target")
)

// Link is the MQTT connection Apply uses: agent/fetch's Conn.
type Link = fetch.Conn

// Staged is a bundle verified and unpacked in a model's inactive slot.
type Staged struct {
	Model   string    `json:"model"`
	Release uint64    `json:"release"`
	Version string    `json:"version,omitempty"`
	Digest  string    `json:"digest"` // the manifest's SHA-256, hex
	Target  string    `json:"target"` // its TUF target path
	Slot    string    `json:"slot"`   // "a" or "b"
	Dir     string    `json:"dir"`    // the slot folder
	At      time.Time `json:"at"`
}

// Stager is told of each bundle staged; agent/lifecycle activates it. An
// error is logged and reported; the bundle stays staged.
type Stager interface {
	OnStaged(ctx context.Context, s Staged, manifest *pb.BundleManifest) error
}

// Slots says which slot of a model is active ("a", "b" or "" for none);
// agent/lifecycle knows. Nil: none is.
type Slots interface {
	ActiveSlot(model string) string
}

// Config configures an Installer.
type Config struct {
	Dir        string // required; see the package comment for its layout
	DeviceID   string // required
	HardwareID string
	Scheme     topic.Scheme // zero: topic.Default()
	Stager     Stager       // nil: staging ends at staged.json
	Slots      Slots        // nil: no slot active
	// Fetch tunes the download (DeviceID, Digest, Scheme and Progress are
	// set by Apply).
	Fetch fetch.Options
	// ManifestTimeout bounds the wait for a retained manifest; 0 = 30 s.
	ManifestTimeout time.Duration
	Limits          unpack.Limits
	// ChunkQuota caps the chunk store's bytes; 0 = chunkstore.DefaultQuota.
	ChunkQuota int64
	// MemoryIndex keeps the chunk store's index in memory (agent/sim
	// only; chunkstore.Options.MemoryIndex).
	MemoryIndex bool
	Now         func() time.Time // nil: time.Now
	Logger      *slog.Logger     // nil: discard
}

// Installer stages bundles. Apply calls are serialised.
type Installer struct {
	cfg    Config
	chunks *chunkstore.Store
	apply  sync.Mutex // one Apply at a time

	mu       sync.Mutex
	verifier *trust.Verifier
	staged   map[string]Staged
	errs     map[string]string // model → last refusal or failure
}

// Open opens the installer's folder, creating what is missing.
func Open(ctx context.Context, cfg Config) (*Installer, error) {
	if cfg.Dir == "" || topic.ValidID(cfg.DeviceID) != nil {
		return nil, errors.New("install: a folder and a valid device ID are required")
	}
	if cfg.Scheme == (topic.Scheme{}) {
		cfg.Scheme = topic.Default()
	}
	if cfg.ManifestTimeout <= 0 {
		cfg.ManifestTimeout = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "models"), 0o700); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	in := &Installer{cfg: cfg, staged: map[string]Staged{}, errs: map[string]string{}}
	cs, err := chunkstore.OpenOptions(ctx, filepath.Join(cfg.Dir, "chunks"),
		chunkstore.Options{QuotaBytes: cfg.ChunkQuota, Live: in.liveManifests, MemoryIndex: cfg.MemoryIndex})
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	in.chunks = cs
	b, err := os.ReadFile(in.stagedPath())
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		cs.Close()
		return nil, fmt.Errorf("install: %w", err)
	default:
		if err := json.Unmarshal(b, &in.staged); err != nil {
			cs.Close()
			return nil, fmt.Errorf("install: %s: %w", in.stagedPath(), err)
		}
	}
	return in, nil
}

// Close closes the chunk store.
func (in *Installer) Close() error { return in.chunks.Close() }

func (in *Installer) stagedPath() string { return filepath.Join(in.cfg.Dir, "staged.json") }

// Provision keeps the roots enrolment gave the device, for the verifier's
// first start. An empty release root is not written (the control plane had
// no release repository yet).
func Provision(dir string, releaseRoot, directorRoot []byte) error {
	rd := filepath.Join(dir, "roots")
	if err := os.MkdirAll(rd, 0o700); err != nil {
		return fmt.Errorf("provision roots: %w", err)
	}
	for name, b := range map[string][]byte{"release.root.json": releaseRoot, "director.root.json": directorRoot} {
		if len(b) == 0 {
			continue
		}
		if len(b) > int(trust.DefaultLimits.Root) {
			return fmt.Errorf("provision roots: %s is %d bytes, over %d", name, len(b), trust.DefaultLimits.Root)
		}
		if err := state.WriteFileAtomic(filepath.Join(rd, name), b, 0o600); err != nil {
			return fmt.Errorf("provision roots: %w", err)
		}
	}
	return nil
}

// trust opens the verifier on first use, from the provisioned roots.
func (in *Installer) trust() (*trust.Verifier, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.verifier != nil {
		return in.verifier, nil
	}
	read := func(name string) []byte {
		b, _ := os.ReadFile(filepath.Join(in.cfg.Dir, "roots", name))
		return b
	}
	tdir := filepath.Join(in.cfg.Dir, "trust")
	rel, dir := read("release.root.json"), read("director.root.json")
	if _, err := os.Stat(filepath.Join(tdir, "trust.json")); errors.Is(err, fs.ErrNotExist) && len(rel) == 0 {
		return nil, ErrNoReleaseRoot
	}
	v, err := trust.Open(trust.Config{Dir: tdir, DeviceID: in.cfg.DeviceID, HardwareID: in.cfg.HardwareID,
		ReleaseRoot: rel, DirectorRoot: dir, Now: in.cfg.Now})
	if err != nil {
		return nil, err
	}
	in.verifier = v
	return v, nil
}

// Outcome is what Apply did for one target.
type Outcome struct {
	Model   string
	Release uint64
	Staged  *Staged // set when this Apply staged it
	Err     error
}

// Apply verifies the metadata and stages every target above what the
// device has. A refusal of the metadata as a whole is returned as the
// error (wrapping one of agent/trust's sentinels) and is recorded as the
// last error of every model staged so far; per-target results are in the
// outcomes.
func (in *Installer) Apply(ctx context.Context, link Link, release, director map[string][]byte) ([]Outcome, error) {
	in.apply.Lock()
	defer in.apply.Unlock()
	v, err := in.trust()
	if err != nil {
		return nil, err
	}
	targets, err := v.VerifyForInstall(release, director)
	if err != nil {
		return nil, err
	}
	in.unpinSuperseded(ctx, v, targets)
	var out []Outcome
	defer func() {
		for _, o := range out {
			if o.Staged != nil {
				in.collectChunks(ctx) // collect.go
				return
			}
		}
	}()
	for _, t := range targets {
		if t.ReleaseCounter <= v.InstalledCounter(t.Model) {
			continue // staged (or installed) already
		}
		if in.stagedAlready(t) {
			// A crash after staged.json was written and before the
			// counter floor was raised (stage.go): raise it now.
			if err := v.RecordInstalled(t); err != nil {
				in.cfg.Logger.Warn("counter floor of a staged release not raised", "model", t.Model, "release", t.ReleaseCounter, "err", err)
			}
			continue
		}
		st, err := in.stage(ctx, link, v, t)
		in.mu.Lock()
		if err != nil {
			in.errs[t.Model] = err.Error()
		} else {
			delete(in.errs, t.Model)
		}
		in.mu.Unlock()
		out = append(out, Outcome{Model: t.Model, Release: t.ReleaseCounter, Staged: st, Err: err})
	}
	return out, nil
}

// stagedAlready reports whether t is the release staged for its model,
// the same bundle.
func (in *Installer) stagedAlready(t trust.Target) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	st, ok := in.staged[t.Model]
	return ok && st.Release == t.ReleaseCounter && st.Digest == t.SHA256 && st.Target == t.Path
}

// SetError records a refusal for a model's report (Apply records its own).
func (in *Installer) SetError(model, msg string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.errs[model] = msg
}

// Staged returns what is staged, by model.
func (in *Installer) Staged() map[string]Staged {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string]Staged, len(in.staged))
	for k, v := range in.staged {
		out[k] = v
	}
	return out
}

// Models is the installer's part of the reported state: per model, what is
// staged and the last error, sorted by name.
func (in *Installer) Models() []*pb.ModelState {
	in.mu.Lock()
	defer in.mu.Unlock()
	names := map[string]bool{}
	for m := range in.staged {
		names[m] = true
	}
	for m := range in.errs {
		names[m] = true
	}
	var out []*pb.ModelState
	for m := range names {
		ms := &pb.ModelState{Name: m, LastError: truncate(in.errs[m], 1024)}
		if s, ok := in.staged[m]; ok {
			ms.StagedRelease, ms.StagedVersion, ms.StagedSlot, ms.StagedDigest = s.Release, truncate(s.Version, 128), s.Slot, s.Digest
		}
		out = append(out, ms)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (in *Installer) saveStaged() error {
	in.mu.Lock()
	b, err := json.MarshalIndent(in.staged, "", "  ")
	in.mu.Unlock()
	if err != nil {
		return err
	}
	return state.WriteFileAtomic(in.stagedPath(), b, 0o600)
}

// inactiveSlot is the slot a new bundle of model goes into: the one not
// active.
func (in *Installer) inactiveSlot(model string) string {
	if in.cfg.Slots != nil && in.cfg.Slots.ActiveSlot(model) == "a" {
		return "b"
	}
	return "a"
}

// Chunks is the installer's chunk store (diagnostics, tests).
func (in *Installer) Chunks() *chunkstore.Store { return in.chunks }

// Verifier is the installer's trust verifier, opened from the provisioned
// roots on first use; the agent's sideload folder verifies with it, so
// both paths share one counter floor.
func (in *Installer) Verifier() (*trust.Verifier, error) { return in.trust() }
