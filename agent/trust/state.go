package trust

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-edge/flotilla/agent/state"
)

// stateFile holds everything the verifier trusts, in one file so that an
// update is all-or-nothing.
const stateFile = "trust.json"

const stateFormat = 1

// persisted is the verifier's durable state.
type persisted struct {
	Format   int               `json:"format"`
	Release  map[string][]byte `json:"release"`  // trusted root, timestamp, snapshot, targets
	Director map[string][]byte `json:"director"` // same, director repository
	// TimeFloor only moves forward; expiry is judged at max(clock, floor).
	TimeFloor time.Time `json:"time_floor"`
	// MaxExpiry is the latest timestamp expiry verified: the wall clock
	// raises the floor to at most just past it.
	MaxExpiry time.Time            `json:"max_expiry"`
	Counters  map[string]uint64    `json:"counters"`  // model → highest installed release counter
	Installed map[string]Installed `json:"installed"` // target path → what was installed
}

// Installed records a target the agent installed, for the boot check.
type Installed struct {
	Path           string    `json:"path"`
	Length         int64     `json:"length"`
	SHA256         string    `json:"sha256"`
	Model          string    `json:"model"`
	ReleaseCounter uint64    `json:"release_counter"`
	At             time.Time `json:"at"`
}

func loadState(dir string) (*persisted, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("trust state: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("trust state %s: %w", filepath.Join(dir, stateFile), err)
	}
	if p.Format != stateFormat {
		return nil, fmt.Errorf("trust state: format %d, want %d", p.Format, stateFormat)
	}
	if len(p.Release[fileRoot]) == 0 || len(p.Director[fileRoot]) == 0 {
		return nil, errors.New("trust state: missing a trusted root")
	}
	if p.Counters == nil {
		p.Counters = map[string]uint64{}
	}
	if p.Installed == nil {
		p.Installed = map[string]Installed{}
	}
	return &p, nil
}

func saveState(dir string, p *persisted) error {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("trust state: %w", err)
	}
	if err := state.WriteFileAtomic(filepath.Join(dir, stateFile), b, 0o600); err != nil {
		return fmt.Errorf("trust state: %w", err)
	}
	return nil
}

// clone deep-copies p so a failed update leaves the original untouched.
func (p *persisted) clone() *persisted {
	c := *p
	c.Release, c.Director = copyFiles(p.Release), copyFiles(p.Director)
	c.Counters = map[string]uint64{}
	for k, v := range p.Counters {
		c.Counters[k] = v
	}
	c.Installed = map[string]Installed{}
	for k, v := range p.Installed {
		c.Installed[k] = v
	}
	return &c
}

func copyFiles(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = append([]byte(nil), v...)
	}
	return out
}

// advanceFloor raises the floor to the wall clock, capped one second past
// the latest expiry verified (nothing verified yet: no clock advance).
func (p *persisted) advanceFloor(now time.Time) {
	if p.MaxExpiry.IsZero() {
		return
	}
	c := now
	if lim := p.MaxExpiry.Add(time.Second); c.After(lim) {
		c = lim
	}
	p.raiseFloor(c)
}

func (p *persisted) raiseFloor(t time.Time) {
	if t.After(p.TimeFloor) {
		p.TimeFloor = t.UTC()
	}
}
