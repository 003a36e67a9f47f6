package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/firmware/selfupdate"
)

// TestUpdateNotConfirmed: running as the pending binary past its deadline,
// Run ends with ErrUpdateNotConfirmed (the program exits and the launcher
// restores the previous binary) and journals why.
func TestUpdateNotConfirmed(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-uc")
	now := time.Now()
	up := &selfupdate.Updater{Dir: selfupdate.New(cfg.DataDir).Dir, Now: func() time.Time { return now.Add(-time.Hour) }}
	if _, err := up.Stage(strings.NewReader("#!/bin/sh\n"), 1<<20, "flotilla-agent", "9.9", time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Setenv(selfupdate.SlotEnv, "a")
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := a.Run(ctx); !errors.Is(err, ErrUpdateNotConfirmed) {
		t.Fatalf("Run: %v", err)
	}
	if st, _ := up.State(); !st.Pending {
		t.Errorf("the unconfirmed binary was confirmed: %+v", st)
	}
	db, err := state.OpenReadOnly(context.Background(), cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ev, _ := db.Recent(context.Background(), 20)
	var codes []string
	for _, e := range ev {
		codes = append(codes, e.Code)
	}
	if !strings.Contains(strings.Join(codes, " "), "agent.unconfirmed") {
		t.Errorf("journal: %v", codes)
	}
}
