package flotilla_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// The system tests run the real control plane and real agents in one
// process, over real TLS, MQTT and SQLite.

const settle = 30 * time.Second

type fleet struct {
	t      *testing.T
	srv    *server.Server
	dir    string
	admin  *apiclient.Client
	agents map[string]*agent.Agent
	stops  map[string]context.CancelFunc
	errs   map[string]chan error
}

func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	s, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newFleet(t *testing.T, s *server.Server, dir string) *fleet {
	tok, err := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.ClientTLS(s.CAPEM(), "")
	if err != nil {
		t.Fatal(err)
	}
	// A bounded client: a call to a server that stalls fails the
	// eventually loop instead of hanging the test.
	admin := apiclient.New(s.APIURL(), strings.TrimSpace(string(tok)), &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}})
	return &fleet{t: t, srv: s, dir: dir, admin: admin, agents: map[string]*agent.Agent{},
		stops: map[string]context.CancelFunc{}, errs: map[string]chan error{}}
}

// start enrols and runs n agents, each pinning the server's CA fingerprint.
func (f *fleet) start(n int, mqttURL string) {
	f.t.Helper()
	ctx := context.Background()
	tok, err := f.admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "system test", MaxUses: n, Labels: map[string]string{"fleet": "test"}})
	if err != nil {
		f.t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("dev-%03d", i)
		a, err := agent.New(agent.Config{
			DataDir: filepath.Join(f.t.TempDir(), id), DeviceID: id, ServerURL: f.srv.APIURL(),
			EnrolToken: tok.Token, CAFingerprint: f.srv.CAFingerprint(), MQTTURL: mqttURL,
			HeartbeatInterval: time.Second, KeepAlive: 2 * time.Second, Version: "system-test",
		})
		if err != nil {
			f.t.Fatal(err)
		}
		actx, stop := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() { errc <- a.Run(actx) }()
		f.agents[id], f.stops[id], f.errs[id] = a, stop, errc
	}
	f.t.Cleanup(func() {
		for id, stop := range f.stops {
			stop()
			select {
			case <-f.errs[id]:
			case <-time.After(settle):
				f.t.Errorf("agent %s did not stop", id)
			}
		}
	})
}

func (f *fleet) waitOnline(what string, want int) {
	f.t.Helper()
	yes := true
	eventually(f.t, what, func() error {
		devs, err := f.admin.ListDevices(context.Background(), apiclient.ListOptions{Online: &yes})
		if err != nil {
			return err
		}
		if len(devs) != want {
			return fmt.Errorf("%d of %d online", len(devs), want)
		}
		return nil
	})
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(settle)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestFleetOnEmbeddedBroker: a server on its embedded defaults and ten
// agents: enrolment, online, desired state after a label, ping, a
// decommissioned device kept out, and a control-plane restart that every
// agent survives by reconnecting on its own, at jittered times.
func TestFleetOnEmbeddedBroker(t *testing.T) {
	dir := t.TempDir()
	cfg := server.Config{DataDir: dir, Listen: freePort(t), MQTTListen: freePort(t)}
	s := startServer(t, cfg)
	f := newFleet(t, s, dir)
	const n = 10
	f.start(n, "")
	f.waitOnline("the fleet online", n)
	ctx := context.Background()

	d, err := f.admin.Device(ctx, "dev-003")
	if err != nil || d.AgentVersion != "system-test" || d.Labels["fleet"] != "test" || len(d.Facts) == 0 {
		t.Fatalf("device as the control plane sees it: %+v, %v", d, err)
	}
	before := f.agents["dev-003"].Status().DesiredRevision
	if _, err := f.admin.Label(ctx, "dev-003", map[string]string{"ring": "canary"}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the agent to accept the new desired state", func() error {
		if got := f.agents["dev-003"].Status().DesiredRevision; got <= before {
			return fmt.Errorf("revision %d, was %d", got, before)
		}
		return nil
	})
	if r, err := f.admin.Command(ctx, "dev-005", "ping", "5s"); err != nil || !r.OK {
		t.Fatalf("ping: %+v, %v", r, err)
	}

	// Decommission: the agent is cut off and stays out.
	if _, err := f.admin.Decommission(ctx, "dev-009"); err != nil {
		t.Fatal(err)
	}
	f.waitOnline("nine online after decommissioning", n-1)
	eventually(t, "dev-009 refused", func() error {
		if st := f.agents["dev-009"].Status(); st.State == agent.StateConnected {
			return errors.New("still connected")
		}
		return nil
	})

	// Restart the control plane (and with it the embedded broker) on the
	// same ports: every agent reconnects by itself.
	connects := func(id string) int64 { return f.agents[id].Status().Counters[agent.CounterConnects] }
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	restartAt := time.Now()
	eventually(t, "agents to notice", func() error {
		for id, a := range f.agents {
			if id != "dev-009" && a.Status().State == agent.StateConnected {
				return fmt.Errorf("%s still connected", id)
			}
		}
		return nil
	})
	s2 := startServer(t, cfg)
	f.srv = s2
	eventually(t, "every agent to reconnect by itself", func() error {
		for id := range f.agents {
			if id != "dev-009" && (connects(id) < 2 || f.agents[id].Status().State != agent.StateConnected) {
				return fmt.Errorf("%s: %d connects", id, connects(id))
			}
		}
		return nil
	})
	f.waitOnline("the fleet back online after a restart", n-1)
	var mu sync.Mutex
	var since []time.Duration
	for id, a := range f.agents {
		if id == "dev-009" {
			continue
		}
		if c := connects(id); c < 2 {
			t.Errorf("%s connected %d times, want a reconnect", id, c)
		}
		mu.Lock()
		since = append(since, a.Status().ConnectedSince.Sub(restartAt))
		mu.Unlock()
	}
	lo, hi := since[0], since[0]
	for _, d := range since {
		lo, hi = min(lo, d), max(hi, d)
	}
	if hi-lo < 50*time.Millisecond {
		t.Errorf("all %d agents reconnected within %v of each other: no jitter", len(since), hi-lo)
	}
	t.Logf("reconnects spread over %v", hi-lo)
	if st := f.agents["dev-009"].Status(); st.State == agent.StateConnected {
		t.Fatal("decommissioned device got back in after the restart")
	}
}

// TestFleetOnMosquitto: the same fleet on a private Mosquitto with dynamic
// security, including a broker restart that devices and the control plane
// ride out.
func TestFleetOnMosquitto(t *testing.T) {
	secret := func() string { b := make([]byte, 16); _, _ = rand.Read(b); return hex.EncodeToString(b) }
	b := mosquittotest.Start(t, mosquittotest.Options{AdminUser: "dynsec-admin", AdminPassword: secret(), Persistence: true})
	dir := t.TempDir()
	s := startServer(t, server.Config{
		DataDir: dir, Listen: freePort(t), MQTTURL: b.URL(), MQTTUser: "flotilla-control", MQTTPassword: secret(),
		Dynsec: &server.Dynsec{AdminUser: b.AdminUser, AdminPassword: b.AdminPassword},
	})
	f := newFleet(t, s, dir)
	const n = 5
	f.start(n, "")
	f.waitOnline("the fleet online on mosquitto", n)

	b.Restart()
	eventually(t, "agents to reconnect after a broker restart", func() error {
		for id, a := range f.agents {
			if c := a.Status().Counters[agent.CounterConnects]; c < 2 || a.Status().State != agent.StateConnected {
				return fmt.Errorf("%s: %d connects, %v", id, c, a.Status().State)
			}
		}
		return nil
	})
	f.waitOnline("the fleet online after the broker restart", n)
	ctx := context.Background()
	if r, err := f.admin.Command(ctx, "dev-001", "ping", "5s"); err != nil || !r.OK {
		t.Fatalf("ping after the broker restart: %+v, %v", r, err)
	}
	if _, err := f.admin.Decommission(ctx, "dev-004"); err != nil {
		t.Fatal(err)
	}
	f.waitOnline("four online after decommissioning", n-1)
}
