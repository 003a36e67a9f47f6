package trust

import (
	"errors"
	"fmt"
	"sort"
)

// keepInstalled is how many installed records are kept per model (the
// A/B slots and a little history).
const keepInstalled = 4

// RecordInstalled records that t (as returned by VerifyForInstall or
// VerifySideload) is installed: the model's counter floor rises to its
// release counter, and VerifyInstalled accepts its manifest at boot.
func (v *Verifier) RecordInstalled(t Target) error {
	if t.Path == "" || t.Model == "" || t.ReleaseCounter == 0 || len(t.SHA256) != 64 || t.Length <= 0 {
		return errors.New("record installed: incomplete target")
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	next := v.st.clone()
	if t.ReleaseCounter < next.Counters[t.Model] {
		return fmt.Errorf("record installed %s: counter %d below %d: %w", t.Path, t.ReleaseCounter, next.Counters[t.Model], ErrRollback)
	}
	next.Counters[t.Model] = t.ReleaseCounter
	next.Installed[t.Path] = Installed{Path: t.Path, Length: t.Length, SHA256: t.SHA256, Model: t.Model,
		ReleaseCounter: t.ReleaseCounter, At: v.cfg.Now().UTC()}
	var same []Installed
	for _, in := range next.Installed {
		if in.Model == t.Model {
			same = append(same, in)
		}
	}
	sort.Slice(same, func(i, j int) bool { return same[i].ReleaseCounter > same[j].ReleaseCounter })
	for _, old := range same[min(len(same), keepInstalled):] {
		delete(next.Installed, old.Path)
	}
	return v.commit(next)
}

// VerifyInstalled checks, at boot and with no expiry or network, that the
// manifest in an installed slot is the one recorded for path.
func (v *Verifier) VerifyInstalled(path string, manifest []byte) (Target, error) {
	v.mu.Lock()
	in, ok := v.st.Installed[path]
	v.mu.Unlock()
	if !ok {
		return Target{}, fmt.Errorf("%s: %w", path, ErrNotInstalled)
	}
	t := Target{Path: in.Path, Length: in.Length, SHA256: in.SHA256, Model: in.Model, ReleaseCounter: in.ReleaseCounter}
	if err := t.Check(manifest); err != nil {
		return Target{}, err
	}
	return t, nil
}
