package lifecycle

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestManualRollbackAndGoldenCheck: a local rollback during probation goes
// back to the previous release in one journaled step, counts, and is
// remembered as rejected; once committed there is nothing to roll back to.
// The golden check on demand passes for the serving release and names the
// release it ran on.
func TestManualRollbackAndGoldenCheck(t *testing.T) {
	ctx := context.Background()
	cs := chunks{}
	f := newFixture(t, RuntimeList{onnxPlugin(t)}, func(c *Config) { c.DefaultPolicy.Duration = 50 * time.Millisecond })
	if err := install(ctx, f.l, cs, digitsRelease(t, cs, 1, `duration = "1s"`, `duration = "0s"`)); err != nil {
		t.Fatal(err)
	}
	f.waitState("digits", func(s State) bool { return s.Phase == PhaseIdle })
	if _, err := f.l.Rollback(ctx, "digits", "on-site test"); !errors.Is(err, ErrNoPrevious) {
		t.Fatalf("rollback of a committed release: %v", err)
	}
	if _, err := f.l.Rollback(ctx, "nosuch", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rollback of an unknown model: %v", err)
	}
	r2 := digitsRelease(t, cs, 2, `duration = "1s"`, `duration = "60s"`)
	if err := install(ctx, f.l, cs, r2); err != nil {
		t.Fatal(err)
	}
	g, err := f.l.CheckGolden(ctx, "digits")
	if err != nil || !g.HasGolden || g.Err != nil || g.Release != 2 || g.Runtime != "onnx" {
		t.Fatalf("golden on demand: %+v, %v", g, err)
	}
	before := f.l.Stats().Model("digits").Snapshot().Total.Requests
	s, err := f.l.Rollback(ctx, "digits", "rolled back on site by diag")
	if err != nil {
		t.Fatal(err)
	}
	if s.ActiveRelease != 1 || s.Phase != PhaseIdle || s.Rollbacks != 1 || s.RejectedRelease != 2 || !strings.Contains(s.LastError, "on site") {
		t.Fatalf("after the rollback: %+v", s)
	}
	if res := checkDigits(t, f.l); res.Release != 1 {
		t.Fatalf("served by %d after the rollback", res.Release)
	}
	if _, ok := f.l.Rejected("digits", digestOf(r2)); !ok {
		t.Error("the release rolled back from is not remembered as rejected")
	}
	if got := f.l.Stats().Model("digits").Snapshot(); got.Rollbacks != 1 || got.Total.Requests != before+1 {
		t.Errorf("stats after the rollback: rollbacks %d, requests %d (was %d; the golden check must not count)", got.Rollbacks, got.Total.Requests, before)
	}
	ev, _ := f.db.Recent(ctx, 5)
	if len(ev) == 0 || ev[0].Code != "model.rolledback" || !strings.Contains(ev[0].Message, "on site") {
		t.Errorf("journal: %+v", ev)
	}
	if _, err := f.l.CheckGolden(ctx, "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("golden of an unknown model: %v", err)
	}
}
