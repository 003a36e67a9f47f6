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
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/pki"
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
	op := newOperator(t, srv, dir, "")
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

// consoleUser is a console session over HTTPS (cookie jar, no redirects
// followed).
type consoleUser struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
}

var (
	loginTokenRE = regexp.MustCompile(`name="login_token" value="([^"]+)"`)
	csrfRE       = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

func consoleLogin(t *testing.T, srv *server.Server, admin *apiclient.Client, name, role string) *consoleUser {
	t.Helper()
	if _, err := admin.CreateUser(context.Background(), api.UserRequest{Name: name, Role: role, Password: name + "-password-long"}); err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := pki.PinnedClientTLS(srv.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	u := &consoleUser{t: t, base: srv.APIURL(), hc: &http.Client{Jar: jar, Transport: &http.Transport{TLSClientConfig: tlsCfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	_, page, _ := u.do("GET", "/login", nil)
	m := loginTokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no login token:\n%s", page)
	}
	if code, _, _ := u.do("POST", "/login", url.Values{"login_token": {m[1]}, "name": {name}, "password": {name + "-password-long"}}); code != http.StatusSeeOther {
		t.Fatalf("login %s: %d", name, code)
	}
	_, page, _ = u.do("GET", "/", nil)
	if m = csrfRE.FindStringSubmatch(page); m == nil {
		t.Fatalf("no CSRF token:\n%s", page)
	}
	u.csrf = m[1]
	return u
}

func (u *consoleUser) do(method, path string, form url.Values) (int, string, http.Header) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.base+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func (u *consoleUser) post(path string) (int, string) {
	code, page, _ := u.do("POST", path, url.Values{"csrf": {u.csrf}, "level": {"warn"}})
	return code, page
}

// TestConsoleRemoteDiag: on a real agent's device page an operator asks
// for status and logs and sees the latest answer, asks for a support
// bundle and downloads it once it is uploaded; a viewer sees the bundle
// listed but no buttons, and the API refuses the viewer's posts and
// download (403) whatever the page shows; a post without the session's
// CSRF token is refused.
func TestConsoleRemoteDiag(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test", Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, "")
	dev := startAgent(t, op, "dev-con")
	ring := logring.New(0, slog.LevelDebug)
	slog.New(ring.Handler(nil)).Warn("fan stalled", "rpm", 0)
	ds := diag.NewServer(diag.Config{Agent: dev.a, Logs: ring})
	dev.a.SetRemoteDiag(ds.Remote)
	dev.a.SetSupportBundler(ds.SupportBundle)
	admin := adminClient(t, srv, dir)
	o := consoleLogin(t, srv, admin, "otto", "operator")
	v := consoleLogin(t, srv, admin, "vera", "viewer")

	if code, _, _ := o.do("POST", "/devices/dev-con/diag/status", url.Values{"csrf": {"forged"}}); code != http.StatusForbidden {
		t.Fatalf("diag without the CSRF token: %d", code)
	}
	if code, _ := o.post("/devices/dev-con/diag/logs"); code != http.StatusSeeOther {
		t.Fatalf("ask for logs: %d", code)
	}
	_, page, _ := o.do("GET", "/devices/dev-con", nil)
	if !strings.Contains(page, `id="diag-logs"`) || !strings.Contains(page, "logs asked by otto") || !strings.Contains(page, "fan stalled") {
		t.Fatalf("device page after asking for logs:\n%s", page)
	}
	if code, _ := o.post("/devices/dev-con/diag/status"); code != http.StatusSeeOther {
		t.Fatalf("ask for status: %d", code)
	}
	_, page, _ = o.do("GET", "/devices/dev-con", nil)
	if !strings.Contains(page, "status asked by otto") || !strings.Contains(page, "&#34;device_id&#34;: &#34;dev-con&#34;") {
		t.Fatalf("device page after asking for status:\n%s", page)
	}
	if code, _ := o.post("/devices/dev-con/support-bundles"); code != http.StatusSeeOther {
		t.Fatalf("ask for a support bundle: %d", code)
	}
	bs, err := admin.SupportBundles(ctx, "dev-con")
	if err != nil || len(bs) != 1 {
		t.Fatalf("bundles: %v %v", bs, err)
	}
	if b, err := admin.SupportBundle(ctx, "dev-con", bs[0].ID, 20*time.Second); err != nil || b.State != supportbundle.StateReady {
		t.Fatalf("bundle: %+v %v", b, err)
	}
	link := "/devices/dev-con/support-bundles/" + bs[0].ID
	_, page, _ = o.do("GET", "/devices/dev-con", nil)
	if !strings.Contains(page, `href="`+link+`"`) {
		t.Fatalf("no download link:\n%s", page)
	}
	code, body, h := o.do("GET", link, nil)
	if code != 200 || h.Get("Content-Type") != "application/gzip" || !strings.Contains(untar(t, []byte(body))["support/logs.jsonl"], "fan stalled") {
		t.Fatalf("download: %d %v (%d bytes)", code, h, len(body))
	}

	_, page, _ = v.do("GET", "/devices/dev-con", nil)
	if !strings.Contains(page, bs[0].ID) || strings.Contains(page, `id="diag-status"`) || strings.Contains(page, `id="support-request"`) || strings.Contains(page, `href="`+link+`"`) {
		t.Fatalf("viewer's device page:\n%s", page)
	}
	for _, p := range []string{"/devices/dev-con/diag/status", "/devices/dev-con/support-bundles"} {
		if code, page := v.post(p); code != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d\n%.500s", p, code, page)
		}
	}
	if code, _, _ := v.do("GET", link, nil); code != http.StatusForbidden {
		t.Errorf("viewer download: %d", code)
	}
}
