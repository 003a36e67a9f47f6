package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"time"

	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/firmware/selfupdate"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// ErrRestartForUpdate is returned by Run after a new agent binary was
// staged (firmware/selfupdate): the program must start again through the
// launcher, which runs the new binary on probation.
var ErrRestartForUpdate = errors.New("agent: restarting into a new agent binary")

// AgentConfirmWithin is how long a new agent binary has, from its
// staging, to connect and confirm itself before it is rolled back.
const AgentConfirmWithin = 10 * time.Minute

// maxAgentBinary caps an agent binary taken from a bundle.
const maxAgentBinary = 512 << 20

// stageAgent takes a verified bundle of kind agent: fill puts its files
// in a scratch folder, the binary for this platform goes into the
// inactive agent slot, and Run is asked to end with ErrRestartForUpdate.
// The running version, or the one already staged, is not staged again
// (a retained desired state must not restart the agent in a loop); a
// version rolled back on this device is refused.
func (m *models) stageAgent(ctx context.Context, man *pb.BundleManifest, fill func(dir string) error) error {
	a := m.a
	up := selfupdate.New(a.cfg.DataDir)
	st, err := up.State()
	if err != nil {
		return err
	}
	v := man.GetVersion()
	switch {
	case v == a.cfg.Version || (v == st.ActiveVersion && st.Active != ""):
		a.log.Info("agent bundle names the running or staged version: nothing to do", "version", v)
		return nil
	case v == st.RejectedVersion:
		return fmt.Errorf("agent %s was rolled back on this device: %s", v, st.RejectedReason)
	}
	platform := goruntime.GOOS + "/" + goruntime.GOARCH
	var entry string
	for _, vr := range man.GetVariants() {
		if vr.GetRuntime() == "native" && (len(vr.GetPlatforms()) == 0 || slices.Contains(vr.GetPlatforms(), platform)) {
			entry = vr.GetEntry()
			break
		}
	}
	if entry == "" {
		return fmt.Errorf("agent bundle %s has no native variant for %s", v, platform)
	}
	scratch := filepath.Join(up.Dir, ".incoming")
	if err := os.RemoveAll(scratch); err != nil {
		return err
	}
	if err := os.MkdirAll(up.Dir, 0o700); err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	if err := fill(scratch); err != nil {
		return fmt.Errorf("agent bundle %s: %w", v, err)
	}
	f, err := os.Open(filepath.Join(scratch, filepath.FromSlash(path.Clean(entry))))
	if err != nil {
		return fmt.Errorf("agent bundle %s: %w", v, err)
	}
	defer f.Close()
	up.Check = selfupdate.VersionCheck // a binary that cannot even say its version is never started
	slot, err := up.Stage(f, maxAgentBinary, man.GetName(), v, AgentConfirmWithin)
	if err != nil {
		return err
	}
	m.a.dg.mu.Lock()
	db, restart := m.a.dg.db, m.a.dg.restart
	m.a.dg.mu.Unlock()
	if db != nil {
		a.journal(ctx, db, "info", "agent.staged", fmt.Sprintf("agent %s staged in slot %s (running %s); restarting into it", v, slot, a.cfg.Version))
	}
	a.log.Info("agent binary staged; restarting into it", "version", v, "slot", slot)
	if restart != nil {
		restart(ErrRestartForUpdate)
	}
	return nil
}

// ErrUpdateNotConfirmed is returned by Run when a new agent binary did not
// connect before its deadline: the program must exit, and the launcher
// restores the previous binary at the next start.
var ErrUpdateNotConfirmed = errors.New("agent: the new agent binary was not confirmed before its deadline")

// watchUpdate runs beside Run. It tells once (journal and reported state)
// of an agent binary the launcher rolled back, and, when this binary is
// the pending one, confirms it once connected — or, past its deadline,
// ends Run with ErrUpdateNotConfirmed.
func (a *Agent) watchUpdate(ctx context.Context, db *state.DB, m *models) {
	up := selfupdate.New(a.cfg.DataDir)
	st, err := up.State()
	if err != nil {
		a.log.Warn("agent slots", "err", err)
		return
	}
	if st.RejectedVersion != "" && !st.Noted {
		msg := fmt.Sprintf("agent %s rolled back to %s: %s", st.RejectedVersion, versionOr(st.ActiveVersion, a.cfg.Version), st.RejectedReason)
		a.journal(ctx, db, "warn", "agent.rolledback", msg)
		if m != nil && st.Bundle != "" {
			m.setNotice(st.Bundle, msg)
		}
		if err := up.MarkNoted(); err != nil {
			a.log.Warn("agent slots", "err", err)
		}
	}
	pending := st.Pending && st.Active != "" && os.Getenv(selfupdate.SlotEnv) == st.Active // this binary is on probation
	st, err = up.Probation(ctx, func() bool { return a.Status().State == StateConnected }, time.Second)
	switch {
	case errors.Is(err, selfupdate.ErrNotConfirmed):
		a.journal(ctx, db, "error", "agent.unconfirmed", err.Error())
		a.dg.mu.Lock()
		restart := a.dg.restart
		a.dg.mu.Unlock()
		if restart != nil {
			restart(ErrUpdateNotConfirmed)
		}
	case err != nil:
		a.log.Warn("agent slots", "err", err)
	case pending && !st.Pending:
		a.journal(ctx, db, "info", "agent.committed", fmt.Sprintf("agent %s confirmed in slot %s", a.cfg.Version, st.Active))
		a.log.Info("agent update confirmed", "version", a.cfg.Version, "slot", st.Active)
		if m != nil && st.Bundle != "" {
			m.setNotice(st.Bundle, "")
		}
	}
}

func versionOr(v, def string) string {
	if v == "" {
		return def + " (the installed agent)"
	}
	return v
}
