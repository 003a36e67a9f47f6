package server_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestRemoteDiag: an operator asks a real agent for its diagnostics
// through the server (flotctl → API → command topic → agent/diag → command
// result): the status names the device and its connection, the logs come
// filtered, and the request is audited.
func TestRemoteDiag(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, "")
	dev := startAgent(t, op, "dev-diag")
	ring := logring.New(0, slog.LevelDebug)
	slog.New(ring.Handler(nil)).Warn("sensor bus timeout", "bus", "i2c-1")
	slog.New(ring.Handler(nil)).Info("routine record")
	dev.a.SetRemoteDiag(diag.NewServer(diag.Config{Agent: dev.a, Logs: ring}).Remote)

	var st struct {
		Source   string `json:"source"`
		Version  string `json:"version"`
		Identity struct {
			DeviceID string `json:"device_id"`
		} `json:"identity"`
		Broker struct {
			State string `json:"state"`
		} `json:"broker"`
	}
	if err := json.Unmarshal([]byte(op.run("-json", "devices", "diag", "dev-diag", "status")), &st); err != nil {
		t.Fatal(err)
	}
	if st.Source != "agent" || st.Version != "bundles-test" || st.Identity.DeviceID != "dev-diag" || st.Broker.State != "connected" {
		t.Fatalf("remote status: %+v", st)
	}
	if out := op.run("devices", "diag", "dev-diag"); !strings.Contains(out, "dev-diag: agent bundles-test, connected") {
		t.Errorf("human status:\n%s", out)
	}
	out := op.run("devices", "diag", "dev-diag", "logs", "-level", "warn")
	if !strings.Contains(out, "sensor bus timeout bus=i2c-1") || strings.Contains(out, "routine record") {
		t.Errorf("remote logs, warn and above:\n%s", out)
	}
	audit := op.run("-json", "audit")
	if !strings.Contains(audit, "device.command.diag-status") || !strings.Contains(audit, "device.command.diag-logs") {
		t.Errorf("audit lacks the diag commands:\n%.2000s", audit)
	}
}
