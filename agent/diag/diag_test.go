package diag_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/diag/cli"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// liveAgent is a real agent (models on, no plugin) connected to a fake
// control plane, with its diag socket.
type liveAgent struct {
	a      *agent.Agent
	srv    *agenttest.Server
	dir    string
	socket string
	server *diag.Server
	ring   *logring.Ring
	cancel context.CancelFunc
	done   chan struct{}
}

func startAgent(t *testing.T, id string) *liveAgent {
	t.Helper()
	srv := agenttest.New(t)
	dir := filepath.Join(t.TempDir(), "data")
	ring := logring.New(100, slog.LevelDebug)
	cfg := agent.Config{DataDir: dir, DeviceID: id, ServerURL: srv.URL(), EnrolToken: srv.Token(), CAFingerprint: srv.CAFingerprint(),
		Version: "9.9.9-test", Logger: slog.New(ring.Handler(nil)),
		Facts: func() *flotillapb.Facts {
			return &flotillapb.Facts{Os: "linux", Arch: "amd64", Accelerators: []*flotillapb.Accelerator{{Kind: "cuda", Model: "test gpu (fake: no GPU here)"}}}
		},
		Models: &agent.ModelsConfig{PluginDir: filepath.Join(t.TempDir(), "none")}}
	a, err := agent.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	la := &liveAgent{a: a, srv: srv, dir: dir, socket: filepath.Join(t.TempDir(), "d.sock"), done: make(chan struct{})}
	l, err := diag.Listen(la.socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	la.cancel = cancel
	s := diag.NewServer(diag.Config{Agent: a, Logs: ring})
	la.server, la.ring = s, ring
	go func() {
		defer close(la.done)
		go s.Serve(ctx, l)
		a.Run(ctx)
	}()
	t.Cleanup(la.stop)
	eventually(t, "connected", func() bool { return a.Status().State == agent.StateConnected })
	return la
}

func (la *liveAgent) stop() {
	la.cancel()
	<-la.done
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runCLI runs flotilla-agent diag with args and returns its exit status,
// stdout and stderr.
func runCLI(t *testing.T, la *liveAgent, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := cli.Main(context.Background(), cli.Env{Args: append([]string{"-socket", la.socket, "-data-dir", la.dir}, args...),
		Stdout: &out, Stderr: &errb, RuntimeSocket: filepath.Join(t.TempDir(), "absent.sock")})
	return code, out.String(), errb.String()
}

// TestLiveAndOffline drives the diag socket of a running agent, then the
// same commands once it stopped: the CLI says so and reads the disk.
func TestLiveAndOffline(t *testing.T) {
	la := startAgent(t, "dev-diag")
	ctx := context.Background()

	fi, err := os.Stat(la.socket)
	if err != nil || fi.Mode().Perm() != 0o600 && fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode: %v, %v", fi.Mode(), err)
	}

	var st diag.StatusReport
	if err := diag.Call(ctx, la.socket, diag.Request{Cmd: diag.CmdStatus}, &st); err != nil {
		t.Fatal(err)
	}
	if st.Source != diag.SourceAgent || st.Version != "9.9.9-test" || st.Identity == nil || st.Identity.DeviceID != "dev-diag" ||
		!st.Identity.Certificate || st.Broker == nil || st.Broker.State != "connected" || st.Broker.LastContact.IsZero() {
		t.Fatalf("status: %+v", st)
	}
	if len(st.Accelerators) != 1 || st.Accelerators[0].Kind != "cuda" || len(st.Runtimes) == 0 || st.Runtimes[0].Name != "wasm" {
		t.Errorf("accelerators %+v, runtimes %+v", st.Accelerators, st.Runtimes)
	}
	if st.Disk.TotalBytes == 0 || st.Disk.Used["state"] == 0 || st.Buffer == nil || st.Disk.Quotas["bundles"] != 1<<30 || st.Disk.Quotas["metrics"] != 64<<20 {
		t.Errorf("disk %+v, buffer %+v", st.Disk, st.Buffer)
	}
	if st.ClockSkewSeconds != nil {
		t.Errorf("skew before any command: %v", *st.ClockSkewSeconds)
	}

	// logs: the ring, filtered.
	var lr diag.LogsReport
	if err := diag.Call(ctx, la.socket, diag.Request{Cmd: diag.CmdLogs, Contains: "CONNECTED", Level: "info"}, &lr); err != nil {
		t.Fatal(err)
	}
	if len(lr.Entries) == 0 || lr.Kept < uint64(len(lr.Entries)) {
		t.Fatalf("logs: %+v", lr)
	}
	for _, e := range lr.Entries {
		if !strings.Contains(strings.ToLower(e.Message+attrsOf(e)), "connected") || e.Level == "DEBUG" {
			t.Errorf("filtered logs kept %+v", e)
		}
	}
	if err := diag.Call(ctx, la.socket, diag.Request{Cmd: diag.CmdLogs, Level: "loud"}, nil); err == nil {
		t.Error("a bad level was accepted")
	}

	// resync: the device announces itself again.
	mark := la.srv.Mark()
	if code, out, errs := runCLI(t, la, "resync"); code != cli.ExitOK || !strings.Contains(out, "resync requested") {
		t.Fatalf("resync: %d %q %q", code, out, errs)
	}
	agenttest.WaitFor[flotillapb.Birth](la.srv, mark, "dev-diag", "birth", nil)

	// Refusals: unknown model, unknown command, another protocol version.
	if code, _, errs := runCLI(t, la, "test-infer", "nosuch"); code != cli.ExitFailed || !strings.Contains(errs, "no such model") {
		t.Errorf("test-infer of an unknown model: %d %q", code, errs)
	}
	if code, _, errs := runCLI(t, la, "rollback", "nosuch", "-reason", "x"); code != cli.ExitFailed || !strings.Contains(errs, "no such model") {
		t.Errorf("rollback of an unknown model: %d %q", code, errs)
	}
	if err := diag.Call(ctx, la.socket, diag.Request{Cmd: "format-disk"}, nil); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: %v", err)
	}
	if got := rawCall(t, la.socket, []byte(`{"v":2,"cmd":"status"}`+"\n")); got.OK || !strings.Contains(got.Error, "version 2") {
		t.Errorf("protocol 2: %+v", got)
	}
	if got := rawCall(t, la.socket, []byte("not json\n")); got.OK || !strings.Contains(got.Error, "not JSON") {
		t.Errorf("garbage: %+v", got)
	}
	if got := rawCall(t, la.socket, bytes.Repeat([]byte("x"), diag.MaxRequest+10)); got.OK || !strings.Contains(got.Error, "over") {
		t.Errorf("oversized: %+v", got)
	}

	// The CLI, human and JSON.
	code, out, _ := runCLI(t, la, "status")
	if code != cli.ExitOK || !strings.Contains(out, "running") || !strings.Contains(out, "dev-diag") || !strings.Contains(out, "cuda") {
		t.Errorf("human status %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, la, "models", "-json")
	if code != cli.ExitOK || strings.TrimSpace(out) != "[]" {
		t.Errorf("models -json %d: %q", code, out)
	}

	// Stopped: the socket is gone; the CLI says so and reads the disk.
	la.stop()
	if _, err := os.Stat(la.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after the agent stopped: %v", err)
	}
	code, out, errs := runCLI(t, la, "status", "-json")
	if code != cli.ExitOK || !strings.Contains(errs, "not running") {
		t.Fatalf("offline status %d: %q", code, errs)
	}
	var off diag.StatusReport
	if err := json.Unmarshal([]byte(out), &off); err != nil {
		t.Fatal(err)
	}
	if off.Source != diag.SourceDisk || off.Identity == nil || off.Identity.DeviceID != "dev-diag" || off.Broker != nil {
		t.Errorf("offline status: %+v", off)
	}
	if code, out, _ := runCLI(t, la, "status"); code != cli.ExitOK || !strings.Contains(out, "AGENT NOT RUNNING") {
		t.Errorf("offline human status %d:\n%s", code, out)
	}
	if code, _, errs := runCLI(t, la, "test-infer", "digits"); code != cli.ExitNotRunning || !strings.Contains(errs, "needs the running agent") {
		t.Errorf("offline test-infer: %d %q", code, errs)
	}
	if code, out, _ := runCLI(t, la, "logs", "-grep", "enrol"); code != cli.ExitOK || !strings.Contains(out, "enrol") {
		t.Errorf("offline logs (the journal) %d: %q", code, out)
	}
}

func attrsOf(e logring.Entry) string {
	var b strings.Builder
	for k, v := range e.Attrs {
		b.WriteString(" " + k + "=" + v)
	}
	return b.String()
}

func rawCall(t *testing.T, socket string, req []byte) diag.Response {
	t.Helper()
	c, err := net.Dial("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(req)
	b, err := io.ReadAll(c)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	var r diag.Response
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("answer %q: %v", b, err)
	}
	return r
}

// TestSupportBundle writes a bundle from a running agent: it holds the
// state, logs and config with every secret redacted, its signature
// verifies against the device key and the fleet CA, and a bundle changed
// by one byte, or checked against another key, fails.
func TestSupportBundle(t *testing.T) {
	la := startAgent(t, "dev-sb")
	ctx := context.Background()
	db, err := state.OpenReadOnly(ctx, la.dir)
	if err != nil {
		t.Fatal(err)
	}
	id, err := db.Identity(ctx)
	db.Close()
	if err != nil || id.MQTTPassword == "" {
		t.Fatalf("identity: %v", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(la.dir, state.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	const token = "s3cr3t-enrol-token-value"
	cfgFile := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(cfgFile, []byte("data_dir = \""+la.dir+"\"\nenrol_token = \""+token+"\"\ndevice_id = \"dev-sb\"\n"), 0o600)
	// A secret logged by mistake, and one in a journal entry.
	la.a.Internals().DB.Record(ctx, state.Event{At: time.Now(), Level: "warn", Code: "test.leak", Message: "mqtt password=" + id.MQTTPassword})

	out := filepath.Join(t.TempDir(), "sb.tar.gz")
	code, stdout, errs := runCLI(t, la, "-config", cfgFile, "support-bundle", "-o", out)
	if code != cli.ExitOK {
		t.Fatalf("support-bundle %d: %q %q", code, stdout, errs)
	}
	archive, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	files := untar(t, archive)
	for _, name := range []string{"manifest.json", "status.json", "journal.json", "logs.jsonl", "config.toml"} {
		if _, ok := files[name]; !ok {
			t.Errorf("bundle lacks %s (has %v)", name, keys(files))
		}
	}
	for name, b := range files {
		for _, secret := range []string{token, id.MQTTPassword, string(keyPEM[40:80])} {
			if bytes.Contains(b, []byte(secret)) {
				t.Errorf("%s holds a secret %q", name, secret)
			}
		}
	}
	if !bytes.Contains(files["config.toml"], []byte(`enrol_token = "[redacted]"`)) || !bytes.Contains(files["config.toml"], []byte(`device_id = "dev-sb"`)) {
		t.Errorf("config.toml:\n%s", files["config.toml"])
	}
	if !bytes.Contains(files["journal.json"], []byte("test.leak")) || !bytes.Contains(files["logs.jsonl"], []byte("connected")) {
		t.Error("journal or logs missing from the bundle")
	}
	var man diag.BundleManifest
	if err := json.Unmarshal(files["manifest.json"], &man); err != nil || man.DeviceID != "dev-sb" || man.Source != diag.SourceAgent {
		t.Errorf("manifest %+v, %v", man, err)
	}

	// Verification.
	sb, _ := os.ReadFile(out + ".sig")
	sig, err := diag.ParseSignature(sb)
	if err != nil {
		t.Fatal(err)
	}
	key, err := state.LoadKey(la.dir)
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().(ed25519.PublicKey)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(la.srv.CAPEM())
	if v, err := diag.Verify(archive, sig, diag.Trust{PublicKey: pub, Roots: roots}); err != nil || !v.Trusted || v.DeviceID != "dev-sb" {
		t.Fatalf("verify: %+v, %v", v, err)
	}
	code, stdout, errs = runCLI(t, la, "verify-bundle", out, "-pubkey", base64.StdEncoding.EncodeToString(pub))
	if code != cli.ExitOK || !strings.Contains(stdout, "OK") {
		t.Errorf("verify-bundle: %d %q %q", code, stdout, errs)
	}
	tampered := bytes.Clone(archive)
	tampered[len(tampered)/2] ^= 1
	if _, err := diag.Verify(tampered, sig, diag.Trust{PublicKey: pub}); !errors.Is(err, diag.ErrTampered) {
		t.Errorf("tampered bundle: %v", err)
	}
	os.WriteFile(out, tampered, 0o600)
	if code, _, errs := runCLI(t, la, "verify-bundle", out); code != cli.ExitFailed || !strings.Contains(errs, "does not match") {
		t.Errorf("verify-bundle of a tampered bundle: %d %q", code, errs)
	}
	// Re-signed by another key: the digest matches, the key is not trusted.
	_, other, _ := ed25519.GenerateKey(nil)
	forged := diag.Sign(tampered, other, "dev-sb", []byte(sig.CertificatePEM))
	if _, err := diag.Verify(tampered, forged, diag.Trust{PublicKey: pub}); !errors.Is(err, diag.ErrUntrusted) {
		t.Errorf("re-signed by another key, against the device key: %v", err)
	}
	if _, err := diag.Verify(tampered, forged, diag.Trust{Roots: roots}); !errors.Is(err, diag.ErrUntrusted) {
		t.Errorf("re-signed by another key, against the CA: %v", err)
	}
	// A signature with a swapped-in digest fails the signature check.
	sig.SHA256 = forged.SHA256
	if _, err := diag.Verify(tampered, sig, diag.Trust{}); !errors.Is(err, diag.ErrTampered) {
		t.Errorf("digest swapped in: %v", err)
	}

	// With the agent stopped the bundle is made from the disk.
	la.stop()
	out2 := filepath.Join(t.TempDir(), "offline.tar.gz")
	if code, _, errs := runCLI(t, la, "support-bundle", "-o", out2); code != cli.ExitOK {
		t.Fatalf("offline support-bundle %d: %q", code, errs)
	}
	b2, _ := os.ReadFile(out2)
	if err := json.Unmarshal(untar(t, b2)["manifest.json"], &man); err != nil || man.Source != diag.SourceDisk || man.DeviceID != "dev-sb" {
		t.Errorf("offline manifest %+v, %v", man, err)
	}
}

func untar(t *testing.T, b []byte) map[string][]byte {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		out[strings.TrimPrefix(h.Name, "support/")] = body
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestRemoteDiag: the control plane asks over the command topic; the
// status and the logs come back in the command result, the logs cut from
// the oldest record to fit 64 KiB; without a handler the agent says so.
func TestRemoteDiag(t *testing.T) {
	la := startAgent(t, "dev-rd")
	ask := func(id string, d *flotillapb.Diag) *flotillapb.CommandResult {
		t.Helper()
		mark := la.srv.Mark()
		la.srv.PublishCommand(&flotillapb.Command{Id: id, DeviceId: "dev-rd", IssuedAtMs: time.Now().UnixMilli(), Kind: &flotillapb.Command_Diag{Diag: d}})
		return agenttest.WaitFor[flotillapb.CommandResult](la.srv, mark, "dev-rd", "cmd-result", func(r *flotillapb.CommandResult) bool { return r.GetCommandId() == id })
	}
	if r := ask("c0", &flotillapb.Diag{What: "status"}); r.GetOk() || !strings.Contains(r.GetError(), "not served") {
		t.Fatalf("without a handler: %v", r)
	}
	la.a.SetRemoteDiag(la.server.Remote)
	r := ask("c1", &flotillapb.Diag{What: "status"})
	var st diag.StatusReport
	if !r.GetOk() || json.Unmarshal(r.GetOutput(), &st) != nil || st.Source != diag.SourceAgent || st.Identity == nil || st.Identity.DeviceID != "dev-rd" {
		t.Fatalf("remote status: %v", r)
	}
	log := slog.New(la.ring.Handler(nil))
	for i := range 100 {
		log.Warn("big record", "n", i, "blob", strings.Repeat("x", 2000))
	}
	r = ask("c2", &flotillapb.Diag{What: "logs", Level: "warn", Contains: "big"})
	var lr diag.LogsReport
	if !r.GetOk() || json.Unmarshal(r.GetOutput(), &lr) != nil {
		t.Fatalf("remote logs: %v", r)
	}
	if len(r.GetOutput()) > agent.MaxCommandOutput || lr.Cut == 0 || len(lr.Entries)+lr.Cut != 100 || lr.Entries[len(lr.Entries)-1].Attrs["n"] != "99" {
		t.Errorf("remote logs: %d bytes, %d entries, %d cut", len(r.GetOutput()), len(lr.Entries), lr.Cut)
	}
	if _, err := la.server.Remote(context.Background(), &flotillapb.Diag{What: "rollback"}); err == nil {
		t.Error("a rollback was served remotely")
	}
}
