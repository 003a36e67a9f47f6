package server_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
)

// TestRemoteSupportBundle: an operator asks a real agent for a support
// bundle through the server (flotctl → API → command topic); the agent
// builds it with agent/diag and uploads it in acknowledged chunks over
// MQTT; the server reassembles it, verifies the device's signature with
// the enrolled key and the fleet CA, and flotctl downloads it: the file
// is the agent's bundle (its logs inside, more than one chunk's worth),
// the signature verifies, and the request and download are audited.
func TestRemoteSupportBundle(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	tok, _ := os.ReadFile(filepath.Join(dir, server.AdminTokenFile))
	op := operator{t: t, srv: srv, token: strings.TrimSpace(string(tok)), dir: dir}
	dev := startAgent(t, op, "dev-sup")
	// Incompressible log records, so the bundle needs several 256 KiB chunks.
	ring := logring.New(4000, slog.LevelDebug)
	log := slog.New(ring.Handler(nil))
	log.Warn("sensor bus timeout", "bus", "i2c-7")
	for range 3000 {
		b := make([]byte, 128)
		_, _ = rand.Read(b)
		log.Debug("noise", "x", hex.EncodeToString(b))
	}
	ds := diag.NewServer(diag.Config{Agent: dev.a, Logs: ring})
	dev.a.SetRemoteDiag(ds.Remote)
	dev.a.SetSupportBundler(ds.SupportBundle)

	out := filepath.Join(t.TempDir(), "sb.tar.gz")
	res := op.run("-json", "devices", "support-bundle", "dev-sup", "-o", out, "-wait", "30s")
	var got struct {
		Bundle string             `json:"bundle"`
		Upload supportbundle.Info `json:"upload"`
	}
	if err := json.Unmarshal([]byte(res), &got); err != nil {
		t.Fatalf("%v: %s", err, res)
	}
	if got.Upload.State != supportbundle.StateReady || got.Upload.Chunks < 2 || !strings.Contains(got.Upload.Verified, "signed by") {
		t.Fatalf("upload: %+v", got.Upload)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != got.Upload.Size {
		t.Fatalf("downloaded %d bytes, upload says %d", len(b), got.Upload.Size)
	}
	sb, err := os.ReadFile(out + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	sig, err := diag.ParseSignature(sb)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := diag.DeviceCredentials(context.Background(), dev.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := diag.Verify(b, sig, diag.Trust{PublicKey: key.Public().(ed25519.PublicKey)}); err != nil || !v.Trusted || v.DeviceID != "dev-sup" {
		t.Fatalf("the downloaded bundle's signature: %+v, %v", v, err)
	}
	logs := untar(t, b)["support/logs.jsonl"]
	if !strings.Contains(logs, "sensor bus timeout") {
		t.Errorf("the bundle's logs lack the agent's record (%d bytes)", len(logs))
	}
	if list := op.run("devices", "support-bundle", "dev-sup", "-list"); !strings.Contains(list, got.Upload.ID) || !strings.Contains(list, "ready") {
		t.Errorf("list:\n%s", list)
	}
	audit := op.run("-json", "audit")
	if !strings.Contains(audit, "device.command.support-bundle") || !strings.Contains(audit, "device.support-bundle.download") {
		t.Errorf("audit lacks the support bundle:\n%.2000s", audit)
	}
}

func untar(t *testing.T, b []byte) map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	files := map[string]string{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(tr)
		files[h.Name] = string(c)
	}
}
