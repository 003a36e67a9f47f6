package trust

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// Config configures a Verifier.
type Config struct {
	Dir        string // durable state folder (made 0700)
	DeviceID   string // required: director targets must name it
	HardwareID string // optional: checked against release and director
	// ReleaseRoot and DirectorRoot are the initial trusted roots (shipped
	// or provisioned at enrolment); used only while Dir holds no state.
	// Afterwards the persisted roots (rotations included) win.
	ReleaseRoot, DirectorRoot []byte
	Now                       func() time.Time // nil: time.Now
	Limits                    Limits           // zero: DefaultLimits
}

// Verifier decides what the device may install. Safe for concurrent use.
type Verifier struct {
	cfg Config
	mu  sync.Mutex
	st  *persisted
}

// Open loads the verifier's state from cfg.Dir, creating it from the
// initial roots on first use, and raises the time floor to the clock.
func Open(cfg Config) (*Verifier, error) {
	if cfg.Dir == "" || cfg.DeviceID == "" {
		return nil, errors.New("trust: dir and device id are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limits == (Limits{}) {
		cfg.Limits = DefaultLimits
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("trust: %w", err)
	}
	stale, _ := filepath.Glob(filepath.Join(cfg.Dir, ".tuf-*"))
	for _, s := range stale {
		os.RemoveAll(s)
	}
	p, err := loadState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if p == nil {
		for name, root := range map[string][]byte{"release": cfg.ReleaseRoot, "director": cfg.DirectorRoot} {
			if err := selfSigned(root); err != nil {
				return nil, fmt.Errorf("trust: initial %s root: %w", name, err)
			}
		}
		p = &persisted{Format: stateFormat,
			Release:  map[string][]byte{fileRoot: cfg.ReleaseRoot},
			Director: map[string][]byte{fileRoot: cfg.DirectorRoot},
			Counters: map[string]uint64{}, Installed: map[string]Installed{}}
	}
	next := p.clone()
	next.advanceFloor(cfg.Now())
	if err := saveState(cfg.Dir, next); err != nil {
		return nil, err
	}
	return &Verifier{cfg: cfg, st: next}, nil
}

func selfSigned(root []byte) (err error) {
	if int64(len(root)) > DefaultLimits.Root {
		return ErrTooLarge
	}
	// go-tuf (v2.4.2, through sigstore) panics verifying with a malformed
	// key, e.g. an ed25519 key whose public half is empty (found by
	// FuzzOpenRoots): such a root is malformed, not a crash.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: root key: %v", ErrMalformed, r)
		}
	}()
	r, err := metadata.Root().FromBytes(root)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if err := r.VerifyDelegate(metadata.ROOT, r); err != nil {
		return fmt.Errorf("%w: %w", ErrBelowThreshold, err)
	}
	return nil
}

// TimeFloor is the persisted time floor.
func (v *Verifier) TimeFloor() time.Time {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st.TimeFloor
}

// InstalledCounter is the highest release counter installed for model.
func (v *Verifier) InstalledCounter(model string) uint64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.st.Counters[model]
}

// RootVersions returns the trusted release and director root versions.
func (v *Verifier) RootVersions() (release, director int64) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, _ := peek(v.st.Release[fileRoot])
	d, _ := peek(v.st.Director[fileRoot])
	return r.Signed.Version, d.Signed.Version
}

// VerifyForInstall verifies both repositories' metadata (file name →
// bytes, as in ReleaseMetadata.metadata and DesiredState.director_metadata)
// and returns the targets the director names for this device, each one
// agreed by the release repository, sorted by path. On any refusal it
// returns an error wrapping one sentinel and persists nothing.
func (v *Verifier) VerifyForInstall(release, director map[string][]byte) ([]Target, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(director) == 0 {
		return nil, fmt.Errorf("director: no metadata: %w", ErrMissingMetadata)
	}
	next, rel, dir, err := v.update(release, director)
	if err != nil {
		return nil, err
	}
	paths := make([]string, 0, len(dir.targets))
	for p := range dir.targets {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var out []Target
	models := map[string]bool{}
	for _, p := range paths {
		t, err := v.agreed(next, rel, dir.targets[p])
		if err != nil {
			return nil, err
		}
		if models[t.Model] {
			return nil, fmt.Errorf("director names two targets for model %s: %w", t.Model, ErrMalformed)
		}
		models[t.Model] = true
		out = append(out, t)
	}
	if err := v.commit(next); err != nil {
		return nil, err
	}
	return out, nil
}

// VerifySideload verifies a bundle's release metadata (carried with the
// bundle, with a fresh timestamp) for the target path. With director
// metadata the director must agree as for an install. Without it the
// install is refused unless localAuth (an explicit local authorisation)
// is set; then the target comes back with DirectorWaived set, for the
// caller to journal and report.
func (v *Verifier) VerifySideload(release, director map[string][]byte, path string, localAuth bool) (Target, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(director) == 0 && !localAuth {
		return Target{}, fmt.Errorf("sideload %s: %w", path, ErrDirectorRequired)
	}
	next, rel, dir, err := v.update(release, director)
	if err != nil {
		return Target{}, err
	}
	var t Target
	if dir != nil {
		dt, ok := dir.targets[path]
		if !ok {
			return Target{}, fmt.Errorf("sideload %s: the director does not name it: %w", path, ErrDisagree)
		}
		t, err = v.agreed(next, rel, dt)
	} else {
		t, err = v.released(next, rel, path)
		t.DirectorWaived = true
	}
	if err != nil {
		return Target{}, err
	}
	if err := v.commit(next); err != nil {
		return Target{}, err
	}
	return t, nil
}

// update refreshes the release repository and, when director metadata is
// given, the director's, against a copy of the state.
func (v *Verifier) update(release, director map[string][]byte) (*persisted, *repoResult, *repoResult, error) {
	if err := checkFiles("release", release, v.cfg.Limits); err != nil {
		return nil, nil, nil, err
	}
	if err := checkFiles("director", director, v.cfg.Limits); err != nil {
		return nil, nil, nil, err
	}
	next := v.st.clone()
	now := v.cfg.Now().UTC()
	ref := now
	if next.TimeFloor.After(ref) {
		ref = next.TimeFloor
	}
	rel, err := refresh("release", v.cfg.Dir, next.Release, release, ref, v.cfg.Limits)
	if err != nil {
		return nil, nil, nil, err
	}
	next.Release = rel.files
	results := []*repoResult{rel}
	var dir *repoResult
	if len(director) > 0 {
		if dir, err = refresh("director", v.cfg.Dir, next.Director, director, ref, v.cfg.Limits); err != nil {
			return nil, nil, nil, err
		}
		next.Director = dir.files
		results = append(results, dir)
	}
	for _, r := range results {
		if r.tsExpires.After(next.MaxExpiry) {
			next.MaxExpiry = r.tsExpires.UTC()
		}
		next.raiseFloor(r.issued)
	}
	next.advanceFloor(now)
	return next, rel, dir, nil
}

func (v *Verifier) commit(next *persisted) error {
	if err := saveState(v.cfg.Dir, next); err != nil {
		return err
	}
	v.st = next
	return nil
}

// agreed checks a director target against the release repository.
func (v *Verifier) agreed(p *persisted, rel *repoResult, dt *metadata.TargetFiles) (Target, error) {
	var dc directorCustom
	if dt.Custom == nil || json.Unmarshal(*dt.Custom, &dc) != nil {
		return Target{}, fmt.Errorf("director target %s: no device in custom metadata: %w", dt.Path, ErrWrongDevice)
	}
	if dc.DeviceID != v.cfg.DeviceID {
		return Target{}, fmt.Errorf("director target %s is for device %q, this is %q: %w", dt.Path, dc.DeviceID, v.cfg.DeviceID, ErrWrongDevice)
	}
	if dc.HardwareID != "" && dc.HardwareID != v.cfg.HardwareID {
		return Target{}, fmt.Errorf("director target %s is for hardware %q, this is %q: %w", dt.Path, dc.HardwareID, v.cfg.HardwareID, ErrWrongHardware)
	}
	rt, ok := rel.targets[dt.Path]
	if !ok {
		return Target{}, fmt.Errorf("%s: %w", dt.Path, ErrNotReleased)
	}
	if rt.Length != dt.Length || len(dt.Hashes["sha256"]) == 0 || !rt.Hashes.Equal(dt.Hashes) {
		return Target{}, fmt.Errorf("%s: director says %d bytes sha256 %s, release says %d bytes sha256 %s: %w",
			dt.Path, dt.Length, hex.EncodeToString(dt.Hashes["sha256"]), rt.Length, hex.EncodeToString(rt.Hashes["sha256"]), ErrDisagree)
	}
	return v.released(p, rel, dt.Path)
}

// released checks the release repository's side of a target: present,
// with a model and counter, for this hardware, not a rollback.
func (v *Verifier) released(p *persisted, rel *repoResult, path string) (Target, error) {
	rt, ok := rel.targets[path]
	if !ok {
		return Target{}, fmt.Errorf("%s: %w", path, ErrNotReleased)
	}
	var rc releaseCustom
	if rt.Custom == nil || json.Unmarshal(*rt.Custom, &rc) != nil || rc.Model == "" || rc.ReleaseCounter == 0 {
		return Target{}, fmt.Errorf("%s: release custom metadata lacks model or release counter: %w", path, ErrMalformed)
	}
	sum := rt.Hashes["sha256"]
	if len(sum) != 32 {
		return Target{}, fmt.Errorf("%s: no sha256: %w", path, ErrMalformed)
	}
	if len(rc.HardwareIDs) > 0 && !slices.Contains(rc.HardwareIDs, v.cfg.HardwareID) {
		return Target{}, fmt.Errorf("%s is released for hardware %v, this is %q: %w", path, rc.HardwareIDs, v.cfg.HardwareID, ErrWrongHardware)
	}
	t := Target{Path: path, Length: rt.Length, SHA256: hex.EncodeToString(sum), Model: rc.Model,
		ReleaseCounter: rc.ReleaseCounter, Version: rc.Version, Kind: rc.Kind, HardwareIDs: rc.HardwareIDs, Custom: *rt.Custom}
	if have := p.Counters[rc.Model]; rc.ReleaseCounter < have {
		return Target{}, fmt.Errorf("%s: model %s release counter %d, installed %d: %w", path, rc.Model, rc.ReleaseCounter, have, ErrRollback)
	}
	for _, in := range p.Installed {
		if in.Model == rc.Model && in.ReleaseCounter == rc.ReleaseCounter && in.SHA256 != t.SHA256 {
			return Target{}, fmt.Errorf("%s: model %s release counter %d was installed with other content (%s): %w", path, rc.Model, rc.ReleaseCounter, in.Path, ErrRollback)
		}
	}
	return t, nil
}
