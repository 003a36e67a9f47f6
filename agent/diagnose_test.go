package agent

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// TestDiagnosticHooks runs the real digits model (ONNX plugin) in a
// connected agent and drives the hooks the diag socket uses: Internals
// shows the lifecycle, the started runtime and the connection; the golden
// check runs on demand; Rollback goes back to release 1 during release
// 2's probation, is journaled and reported to the control plane; Resync
// announces the device again; a command's issue time gives the clock skew.
func TestDiagnosticHooks(t *testing.T) {
	t.Parallel()
	lib := ortLib(t)
	bin := onnxPluginBin(t)
	srv := agenttest.New(t)
	f := newSideloadFixture(t)
	cfg := testConfig(t, srv, "dev-dg")
	plugins, side := filepath.Join(t.TempDir(), "plugins"), filepath.Join(t.TempDir(), "sideload")
	copyFile(t, bin, filepath.Join(plugins, "flotilla-runtime-onnx"), 0o755)
	dk, err := release.GenerateKey(release.RoleOnline)
	if err != nil {
		t.Fatal(err)
	}
	director, err := release.NewDirector(dk, time.Now(), 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := install.Provision(stagingDir(cfg.DataDir), f.repo.Roots[0], director.Root()); err != nil {
		t.Fatal(err)
	}
	cfg.Models = &ModelsConfig{PluginDir: plugins, ORTLib: lib, SideloadDir: side, SideloadWaiveDirector: true,
		SideloadSettle: 100 * time.Millisecond, Lifecycle: lifecycle.Config{DefaultPolicy: lifecycle.Policy{Duration: time.Hour}}}
	ctx := context.Background()

	if _, err := (&Agent{}).Rollback(ctx, "digits", "x"); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("rollback before Run: %v", err)
	}
	r := start(t, cfg)
	eventually(t, "connected", func() bool { return r.Internals().Connected })
	for n := uint64(1); n <= 2; n++ {
		name := "digits-" + string(rune('0'+n))
		f.drop(side, name, n, nil)
		if o, text := result(t, side, name); o != sideloadDone {
			t.Fatalf("sideload %d: %s %q", n, o, text)
		}
	}
	in := r.Internals()
	if in.Lifecycle == nil || in.DB == nil || in.DataDir != cfg.DataDir || in.Version != "1.2.3-test" {
		t.Fatalf("internals: %+v", in)
	}
	var onnx RuntimeStatus
	for _, rt := range in.Runtimes {
		if rt.Name == "onnx" {
			onnx = rt
		}
	}
	if !onnx.Started || onnx.Failed != "" {
		t.Errorf("runtimes: %+v", in.Runtimes)
	}
	if in.Quotas["bundles"] == 0 || in.Quotas["metrics"] == 0 {
		t.Errorf("quotas: %v", in.Quotas)
	}
	g, err := in.Lifecycle.CheckGolden(ctx, "digits")
	if err != nil || !g.HasGolden || g.Err != nil || g.Release != 2 {
		t.Fatalf("golden on demand: %+v, %v", g, err)
	}

	mark := srv.Mark()
	st, err := r.Rollback(ctx, "digits", "on-site test")
	if err != nil || st.ActiveRelease != 1 || st.Rollbacks != 1 {
		t.Fatalf("rollback: %+v, %v", st, err)
	}
	agenttest.WaitFor[flotillapb.ReportedState](srv, mark, "dev-dg", topic.Reported, func(rs *flotillapb.ReportedState) bool {
		for _, m := range rs.GetModels() {
			if m.GetName() == "digits" && m.GetActiveRelease() == 1 && m.GetHealth() == flotillapb.ModelState_HEALTH_ROLLED_BACK &&
				strings.Contains(m.GetLastError(), "on-site test") {
				return true
			}
		}
		return false
	})
	ev, err := in.DB.Recent(ctx, 5)
	if err != nil || len(ev) == 0 || ev[0].Code != "diag.rollback" || ev[1].Code != "model.rolledback" {
		t.Errorf("journal: %+v, %v", ev, err)
	}
	if _, err := r.Rollback(ctx, "digits", "again"); !errors.Is(err, lifecycle.ErrNoPrevious) {
		t.Errorf("a second rollback: %v", err)
	}

	mark = srv.Mark()
	if err := r.Resync(ctx); err != nil {
		t.Fatal(err)
	}
	agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-dg", topic.Birth, nil)

	issued := time.Now().Add(-5 * time.Second)
	mark = srv.Mark()
	srv.PublishCommand(&flotillapb.Command{Id: "skew", DeviceId: "dev-dg", IssuedAtMs: issued.UnixMilli(), Kind: &flotillapb.Command_Ping{Ping: &flotillapb.Ping{}}})
	agenttest.WaitFor[flotillapb.CommandResult](srv, mark, "dev-dg", topic.CommandResult, nil)
	if in := r.Internals(); in.SkewMeasured.IsZero() || in.ClockSkew < 5*time.Second {
		t.Errorf("clock skew %v measured at %v, want at least the 5 s the command was backdated", in.ClockSkew, in.SkewMeasured)
	}

	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if in := r.Internals(); in.DB != nil || in.Lifecycle != nil || in.Connected {
		t.Errorf("internals after Run: %+v", in)
	}
	if err := r.Resync(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("resync after Run: %v", err)
	}
}
