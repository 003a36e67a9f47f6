package agent

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/enrol"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

func TestEnrolRefusalsStopRun(t *testing.T) {
	srv := agenttest.New(t)
	// Take dev-taken for real, so 409 comes from the server's own check.
	first := start(t, testConfig(t, srv, "dev-taken"))
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-taken", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	first.stop(t)

	tests := []struct {
		name    string
		id      string
		prepare func(cfg *Config)
		want    error
		msg     string
	}{
		{"bad token", "dev-a", func(cfg *Config) { cfg.EnrolToken = "wrong" }, enrol.ErrUnauthorized, "unknown enrol token"},
		{"taken", "dev-taken", nil, enrol.ErrConflict, "already enrolled"},
		{"exhausted", "dev-b", func(*Config) { srv.FailEnrol(http.StatusGone, "token exhausted", 1) }, enrol.ErrGone, "token exhausted"},
		{"invalid", "dev-c", func(*Config) { srv.FailEnrol(http.StatusBadRequest, "labels: too many", 1) }, enrol.ErrInvalid, "too many"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, srv, tt.id)
			if tt.prepare != nil {
				tt.prepare(&cfg)
			}
			err := start(t, cfg).wait(t)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Run = %v, want %v with %q", err, tt.want, tt.msg)
			}
		})
	}
	if n := srv.Enrolments(); n != 1 {
		t.Errorf("%d enrolments, want 1", n)
	}
}

func TestEnrolRetriesTransientFailures(t *testing.T) {
	srv := agenttest.New(t)
	srv.FailEnrol(http.StatusServiceUnavailable, "starting up", 2)
	r := start(t, testConfig(t, srv, "dev-1"))
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	if n := r.Status().Counters[CounterEnrolAttempts]; n != 3 {
		t.Errorf("%d enrol attempts, want 3", n)
	}
}

func TestEnrolWithCAFile(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	cfg.CAFingerprint = ""
	cfg.CAFile = t.TempDir() + "/ca.pem"
	if err := writeFile(cfg.CAFile, srv.CAPEM()); err != nil {
		t.Fatal(err)
	}
	start(t, cfg)
	agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
}

func TestRestartReusesCredentials(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	r := start(t, cfg)
	first := agenttest.WaitFor[flotillapb.Birth](srv, 0, "dev-1", topic.Birth, nil)
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}

	mark := srv.Mark()
	cfg.EnrolToken = "" // used once: a restart must not need it
	start(t, cfg)
	second := agenttest.WaitFor[flotillapb.Birth](srv, mark, "dev-1", topic.Birth, nil)
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	if second.GetSession() == first.GetSession() {
		t.Error("a new process kept the old session number")
	}
	if n := srv.Enrolments(); n != 1 {
		t.Errorf("%d enrolments, want 1", n)
	}
	if n := srv.Connects("dev-1"); n != 2 {
		t.Errorf("%d connects, want 2", n)
	}
}

func TestNotConfigured(t *testing.T) {
	_, err := New(Config{DataDir: t.TempDir(), DeviceID: "Not Valid"})
	if err == nil {
		t.Error("New accepted an invalid device ID")
	}
	a, err := New(Config{DataDir: t.TempDir(), DeviceID: "dev-1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Run(t.Context()); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Run = %v, want ErrNotConfigured", err)
	}
}
