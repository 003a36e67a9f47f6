// Package selfupdate replaces the agent binary in the field without
// bricking the device: a new binary is staged in one of two slots in the
// data folder (DATA/agent/a, DATA/agent/b), the agent restarts into it,
// and it must prove itself — connect to the broker — within a deadline,
// or the previous binary is restored.
//
// The installed binary (/usr/bin/flotilla-agent, read-only under the
// systemd unit's ProtectSystem=strict) is the launcher: at every start,
// before anything else, `flotilla-agent run` asks Select which binary
// runs and execs it (marking the environment so the slot binary does not
// launch again). A pending update counts its starts: when it has started
// MaxAttempts times without confirming (it crashes at start, systemd
// restarts it), or its deadline has passed (it runs but never connects:
// Probation makes it exit), Select restores the previous binary and
// remembers the rejected version with the reason. The running agent calls
// Confirm once it is connected.
//
// Every state change is one atomic file write (state.json: temporary file,
// fsync, rename), so a power cut at any point leaves the old decision or
// the new one.
package selfupdate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// DirName is the slots' folder in the data folder.
const DirName = "agent"

// BinaryName is the agent binary's name in a slot.
const BinaryName = "flotilla-agent"

// SlotEnv is set in the environment of a binary started from a slot, to
// the slot's name: it must not launch again.
const SlotEnv = "FLOTILLA_AGENT_SLOT"

// Errors callers branch on with errors.Is.
var (
	ErrPending      = errors.New("selfupdate: an update is already pending")
	ErrNotConfirmed = errors.New("selfupdate: the new agent was not confirmed before its deadline")
)

// State is the slots' durable state.
type State struct {
	Active          string    `json:"active"` // "" = the installed binary, else "a" or "b"
	ActiveVersion   string    `json:"active_version,omitempty"`
	Previous        string    `json:"previous"` // the rollback target while Pending
	PreviousVersion string    `json:"previous_version,omitempty"`
	Pending         bool      `json:"pending"`
	Attempts        int       `json:"attempts"` // starts of the pending binary so far
	Deadline        time.Time `json:"deadline,omitzero"`
	RejectedVersion string    `json:"rejected_version,omitempty"`
	RejectedReason  string    `json:"rejected_reason,omitempty"`
	// Noted is set once the agent has journaled and reported the last
	// rollback (MarkNoted), so it is told once.
	Noted bool `json:"noted,omitempty"`
	// Bundle is the name of the bundle the active binary came from.
	Bundle string `json:"bundle,omitempty"`
}

// Updater manages the slots in Dir (DATA/agent).
type Updater struct {
	Dir string
	// MaxAttempts is how many starts a pending binary gets (default 3).
	MaxAttempts int
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Check test-runs a staged binary before it is made active (see
	// VersionCheck); nil: none. A binary that fails it is removed, never
	// started, and its version recorded as rejected.
	Check func(binary, version string) error
}

// New returns the updater of the data folder dataDir.
func New(dataDir string) *Updater {
	return &Updater{Dir: filepath.Join(dataDir, DirName)}
}

func (u *Updater) now() time.Time {
	if u.Now != nil {
		return u.Now()
	}
	return time.Now()
}

func (u *Updater) maxAttempts() int {
	if u.MaxAttempts > 0 {
		return u.MaxAttempts
	}
	return 3
}

func (u *Updater) statePath() string { return filepath.Join(u.Dir, "state.json") }

// State reads the state; the zero State when there is none (the installed
// binary runs).
func (u *Updater) State() (State, error) {
	var st State
	b, err := os.ReadFile(u.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("selfupdate: %w", err)
	}
	if len(b) > 64<<10 {
		return st, errors.New("selfupdate: state.json is too large")
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("selfupdate: state.json: %w", err)
	}
	for _, s := range []string{st.Active, st.Previous} {
		if s != "" && s != "a" && s != "b" {
			return st, fmt.Errorf("selfupdate: state.json names slot %q", s)
		}
	}
	return st, nil
}

func (u *Updater) save(st State) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(u.statePath(), b, 0o600)
}

// BinaryPath is the binary of slot ("" = none: the installed one runs).
func (u *Updater) BinaryPath(slot string) string {
	if slot == "" {
		return ""
	}
	return filepath.Join(u.Dir, slot, BinaryName)
}

// Stage writes the new binary (read from src, at most maxSize bytes) into
// the inactive slot and makes it the active one, pending: it must be
// confirmed within confirmWithin of its first start. The caller has
// verified the binary (release signatures, director). Refused while
// another update is pending.
func (u *Updater) Stage(src io.Reader, maxSize int64, bundle, version string, confirmWithin time.Duration) (string, error) {
	st, err := u.State()
	if err != nil {
		return "", err
	}
	if st.Pending {
		return "", fmt.Errorf("%w: version %s in slot %s", ErrPending, st.ActiveVersion, st.Active)
	}
	slot := "a"
	if st.Active == "a" {
		slot = "b"
	}
	dir := filepath.Join(u.Dir, slot)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("selfupdate: %w", err)
	}
	b, err := io.ReadAll(io.LimitReader(src, maxSize+1))
	if err != nil {
		return "", fmt.Errorf("selfupdate: %w", err)
	}
	if int64(len(b)) > maxSize {
		return "", fmt.Errorf("selfupdate: binary over %d bytes", maxSize)
	}
	if err := writeAtomic(u.BinaryPath(slot), b, 0o700); err != nil {
		return "", err
	}
	if u.Check != nil {
		if err := u.Check(u.BinaryPath(slot), version); err != nil {
			_ = os.Remove(u.BinaryPath(slot))
			st.RejectedVersion, st.RejectedReason = version, "test run failed: "+err.Error()
			if serr := u.save(st); serr != nil {
				return "", serr
			}
			return "", fmt.Errorf("%w: %s: %w", ErrCheckFailed, version, err)
		}
	}
	next := State{Active: slot, ActiveVersion: version, Previous: st.Active, PreviousVersion: st.ActiveVersion,
		Pending: true, Deadline: u.now().Add(confirmWithin), RejectedVersion: st.RejectedVersion, RejectedReason: st.RejectedReason,
		Noted: st.Noted, Bundle: bundle}
	if err := u.save(next); err != nil {
		return "", err
	}
	return slot, nil
}

// Select is the launcher's decision at a start: the binary to exec ("" =
// the installed one) and the state it acted on. A pending binary that
// used up its starts or its deadline is rolled back first.
func (u *Updater) Select() (string, State, error) {
	st, err := u.State()
	if err != nil {
		return "", st, err
	}
	if st.Pending {
		switch {
		case st.Attempts >= u.maxAttempts():
			st = u.rollback(st, fmt.Sprintf("started %d times without confirming", st.Attempts))
		case u.now().After(st.Deadline):
			st = u.rollback(st, "not confirmed before its deadline "+st.Deadline.UTC().Format(time.RFC3339))
		default:
			st.Attempts++
		}
		if err := u.save(st); err != nil {
			return "", st, err
		}
	}
	if st.Active != "" {
		if fi, err := os.Stat(u.BinaryPath(st.Active)); err != nil || !fi.Mode().IsRegular() {
			reason := fmt.Sprintf("slot %s binary missing", st.Active)
			if st.Pending {
				st = u.rollback(st, reason)
				if err := u.save(st); err != nil {
					return "", st, err
				}
			} else {
				return "", st, errors.New("selfupdate: " + reason)
			}
		}
	}
	return u.BinaryPath(st.Active), st, nil
}

// Failed rolls a pending binary back at once (the launcher could not exec
// it): the previous binary runs at the next start.
func (u *Updater) Failed(reason string) (State, error) {
	st, err := u.State()
	if err != nil || !st.Pending {
		return st, err
	}
	st = u.rollback(st, reason)
	return st, u.save(st)
}

func (u *Updater) rollback(st State, reason string) State {
	return State{Active: st.Previous, ActiveVersion: st.PreviousVersion, RejectedVersion: st.ActiveVersion, RejectedReason: reason,
		Bundle: st.Bundle}
}

// MarkNoted records that the last rollback was journaled and reported.
func (u *Updater) MarkNoted() error {
	st, err := u.State()
	if err != nil || st.Noted || st.RejectedVersion == "" {
		return err
	}
	st.Noted = true
	return u.save(st)
}

// Confirm commits the pending binary: the running agent proved itself.
// It does nothing when nothing is pending.
func (u *Updater) Confirm() (State, error) {
	st, err := u.State()
	if err != nil || !st.Pending {
		return st, err
	}
	st.Pending, st.Attempts, st.Deadline = false, 0, time.Time{}
	st.Previous, st.PreviousVersion = "", ""
	return st, u.save(st)
}

// Probation runs in a pending agent: it polls healthy (connected to the
// broker) until it holds, then confirms; when the deadline passes first
// it returns ErrNotConfirmed and the caller must exit, so the launcher
// restores the previous binary. Nothing pending: it returns nil at once.
func (u *Updater) Probation(ctx context.Context, healthy func() bool, poll time.Duration) (State, error) {
	st, err := u.State()
	if err != nil || !st.Pending {
		return st, err
	}
	if os.Getenv(SlotEnv) != st.Active {
		return st, nil // not the pending binary (the launcher was bypassed)
	}
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		// The deadline first: past it, the launcher rolls back at the next
		// start whatever this binary does, so it must not confirm.
		if u.now().After(st.Deadline) {
			return st, fmt.Errorf("%w: version %s", ErrNotConfirmed, st.ActiveVersion)
		}
		if healthy() {
			return u.Confirm()
		}
		select {
		case <-ctx.Done():
			return st, nil
		case <-t.C:
		}
	}
}

// writeAtomic writes a file so that a crash leaves the old one or the new.
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("selfupdate: %w", err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("selfupdate: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("selfupdate: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("selfupdate: %w", err)
	}
	defer d.Close()
	return d.Sync()
}
