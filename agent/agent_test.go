package agent

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/enrol"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/pin"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

func isStatus(st flotillapb.Status_State, reason string) func(*flotillapb.Status) bool {
	return func(s *flotillapb.Status) bool { return s.GetState() == st && s.GetReason() == reason }
}

func TestEnrolConnectAndShutdown(t *testing.T) {
	srv := agenttest.New(t)
	clock := agenttest.NewClock(time.Unix(1_700_000_000, 0))
	cfg := testConfig(t, srv, "dev-1")
	cfg.Clock = clock
	cfg.HeartbeatInterval = 10 * time.Second
	r := start(t, cfg)

	birth := agenttest.WaitFor[flotillapb.Birth](srv, 0, "dev-1", topic.Birth, nil)
	if birth.GetProtocolVersion() != wire.ProtocolVersion || birth.GetAgentVersion() != "1.2.3-test" ||
		birth.GetFacts().GetCpuModel() != "test cpu" || birth.GetLabels()["site"] != "lab" ||
		birth.GetSession() == 0 || birth.GetBootTimeMs() != clock.Now().UnixMilli() {
		t.Errorf("birth = %v", birth)
	}
	online := agenttest.WaitFor[flotillapb.Status](srv, 0, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_ONLINE, ""))
	if online.GetSession() != birth.GetSession() {
		t.Errorf("status session %d, birth session %d", online.GetSession(), birth.GetSession())
	}
	if !srv.UsedClientCert("dev-1") {
		t.Error("the agent did not present its client certificate")
	}
	eventually(t, "connected state", func() bool { return r.Status().State == StateConnected })

	// Heartbeat on the fake clock.
	mark := srv.Mark()
	eventually(t, "heartbeat timer", func() bool { return clock.Waiters() > 0 })
	clock.Advance(10 * time.Second)
	hb := agenttest.WaitFor[flotillapb.Heartbeat](srv, mark, "dev-1", topic.Heartbeat, nil)
	if hb.GetSession() != birth.GetSession() || hb.GetUptimeMs() != 10_000 || hb.GetSentAtMs() != clock.Now().UnixMilli() {
		t.Errorf("heartbeat = %v", hb)
	}

	eventually(t, "heartbeat counted", func() bool { return r.Status().Counters[CounterHeartbeats] == 1 })
	mark = srv.Mark()
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v", err)
	}
	agenttest.WaitFor[flotillapb.Status](srv, mark, "dev-1", topic.Status, isStatus(flotillapb.Status_STATE_OFFLINE, "shutdown"))
	if st := srv.RetainedStatus("dev-1"); st.GetState() != flotillapb.Status_STATE_OFFLINE || st.GetReason() != "shutdown" {
		t.Errorf("retained status = %v", st)
	}
	if got := r.Status(); got.State != StateStopped || got.Counters[CounterConnects] != 1 {
		t.Errorf("status = %+v", got)
	}

	// The credentials are stored; the key file is private.
	db, err := state.Open(context.Background(), cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id, err := db.Identity(context.Background())
	if err != nil || id.DeviceID != "dev-1" || id.MQTTPassword == "" || len(id.CAPEM) == 0 || len(id.CertPEM) == 0 {
		t.Errorf("identity = %v, %v", id, err)
	}
}

func TestWrongFingerprintRefusesToEnrol(t *testing.T) {
	srv := agenttest.New(t)
	cfg := testConfig(t, srv, "dev-1")
	cfg.CAFingerprint = pin.Fingerprint([]byte("some other CA"))
	r := start(t, cfg)
	err := r.wait(t)
	if !errors.Is(err, enrol.ErrFingerprint) {
		t.Fatalf("Run = %v, want ErrFingerprint", err)
	}
	if srv.Enrolments() != 0 {
		t.Error("the server enrolled the device")
	}
	db, err := state.Open(context.Background(), cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Identity(context.Background()); !errors.Is(err, state.ErrNotEnrolled) {
		t.Errorf("identity stored after a refused server: %v", err)
	}
}
