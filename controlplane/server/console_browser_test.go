package server_test

import (
	"context"
	"expvar"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// chromiumPath finds Debian's chromium ($FLOTILLA_CHROMIUM first). Missing,
// it fails the test under CI (.ci/deps installs it) and skips it elsewhere.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("FLOTILLA_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is missing: .ci/deps installs it")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// artifactDir is where a test's screenshots go: $FLOTILLA_ARTIFACTS/<test>,
// or a folder under the system's temporary one, kept after the test.
func artifactDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("FLOTILLA_ARTIFACTS")
	if root == "" {
		root = filepath.Join(os.TempDir(), "flotilla-artifacts")
	}
	dir := filepath.Join(root, strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshots in %s", dir)
	return dir
}

// startConsoleAgent is a real agent running the digits model with one
// second telemetry windows, so that what it serves reaches the drift
// report within seconds.
func startConsoleAgent(t *testing.T, srv *server.Server, id, token string) *agent.Agent {
	t.Helper()
	dataDir := filepath.Join(t.TempDir(), id)
	a, err := agent.New(agent.Config{DataDir: dataDir, DeviceID: id, ServerURL: srv.APIURL(), EnrolToken: token,
		CAFingerprint: srv.CAFingerprint(), MQTTURL: srv.MQTTURL(), HeartbeatInterval: time.Second, Version: "console-test",
		Logger: testLogger(t), Metrics: new(expvar.Map).Init(),
		Telemetry: agent.TelemetryConfig{Window: time.Second, CheckInterval: 100 * time.Millisecond, AckTimeout: 2 * time.Second},
		Models: &agent.ModelsConfig{PluginDir: onnxPluginDir(t), ORTLib: ortLib(t), InferAddr: "127.0.0.1:0",
			InferSocket: filepath.Join(dataDir, agent.InferSocketName),
			Lifecycle: lifecycle.Config{CheckInterval: 50 * time.Millisecond,
				DefaultPolicy: lifecycle.Policy{Duration: 300 * time.Millisecond}}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := a.Run(ctx); err != nil {
			t.Errorf("agent run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, "agent connected", func() bool { return a.Status().State == agent.StateConnected })
	return a
}

// serveDigits sends, every 200 ms until the test ends, one digits row to
// each agent running the model, through the agent's local inference API:
// the agents summarise what they serve against the bundle's baseline and
// send it, which the rollout's gates and the drift page read.
func serveDigits(t *testing.T, srv *server.Server, agents map[string]*agent.Agent) {
	pixels, _ := digitsRows(t)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	t.Cleanup(func() { cancel(); wg.Wait() })
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			for id, a := range agents {
				if reportedDigits(srv, id).GetActiveRelease() == 0 {
					continue
				}
				inferRow(t, "http://"+a.InferAddr(), pixels[i%len(pixels)])
			}
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
}

// TestConsoleInBrowser drives the operator console in headless Chromium
// against a real control plane with two real agents running the digits
// model: an operator logs in, sees the fleet, starts a two-stage rollout
// from the console's form, watches the page's live part move to the
// second stage without reloading, pauses the rollout with a reason (the
// audit log names the user); a viewer in another browser is shown no
// buttons and its hand-made resume is refused by the API; the operator
// sees the models, the bundle, the drift charts of what the devices
// served and the audit log. Screenshots of each step are kept (artifactDir).
func TestConsoleInBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	ortLib(t)
	shots := artifactDir(t)
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute) // the whole test, on a shared machine
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 200 * time.Millisecond, Logger: testLogger(t), Rollouts: server.RolloutConfig{Every: 100 * time.Millisecond},
		Console: server.ConsoleConfig{LivePoll: 250 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)
	op.release(digitsSource(t, "1", func(dir string) {
		toml := filepath.Join(dir, "bundle.toml")
		b, err := os.ReadFile(toml)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(toml, []byte(strings.Replace(string(b), `duration = "10m"`, `duration = "1s"`, 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}), "1")

	admin := adminClient(t, srv, dir)
	agents := map[string]*agent.Agent{}
	for _, id := range []string{"dev-0", "dev-1"} {
		et, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: id, MaxUses: 1})
		if err != nil {
			t.Fatal(err)
		}
		agents[id] = startConsoleAgent(t, srv, id, et.Token)
	}
	if _, err := admin.Label(ctx, "dev-0", map[string]string{"site": "north"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Label(ctx, "dev-1", map[string]string{"site": "south"}, nil); err != nil {
		t.Fatal(err)
	}
	serveDigits(t, srv, agents)
	// The fleet page is drawn once: both devices must be online first.
	eventually(t, "both devices online", func() bool {
		online := true
		devs, err := admin.ListDevices(ctx, apiclient.ListOptions{})
		for _, d := range devs {
			online = online && d.Online
		}
		return err == nil && len(devs) == 2 && online
	})
	// The first console user, made with the admin token as flotctl does.
	if _, err := admin.CreateUser(ctx, api.UserRequest{Name: "olivia", Role: "operator", Password: "olivia's password"}); err != nil {
		t.Fatal(err)
	}

	actx, acancel := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.Flag("ignore-certificate-errors", true),
		chromedp.WindowSize(1280, 1000))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer bcancel()
	// One budget for the whole browser session: the machine is shared.
	bctx, tcancel := context.WithTimeout(bctx, 3*time.Minute)
	defer tcancel()
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	str := func(what string, a chromedp.Action[string]) string {
		t.Helper()
		s, err := chromedp.Run(bctx, a)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return strings.TrimSpace(s)
	}
	count := func(sel string) int {
		t.Helper()
		n, err := chromedp.Run(bctx, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, sel)))
		if err != nil {
			t.Fatalf("count %s: %v", sel, err)
		}
		return n
	}
	shot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		return str("read "+sel, chromedp.Text(chromedp.CSS(sel)))
	}
	// waitText polls the page (never reloading it) until sel's text is want.
	waitText := func(sel, want string) {
		t.Helper()
		var got string
		for bctx.Err() == nil {
			if count(sel) > 0 {
				if s, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(sel))); err == nil {
					if got = strings.TrimSpace(s); got == want {
						return
					}
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Fatalf("%s never read %q (last %q)", sel, want, got)
	}

	// Log in: the console sends a stranger to the login form first.
	do("open the console", chromedp.Navigate(srv.APIURL()+"/rollouts"), chromedp.WaitVisible(chromedp.ID("name")))
	loc := str("location", chromedp.Location())
	if !strings.HasSuffix(loc, "/login") {
		t.Fatalf("a stranger is at %s, not the login page", loc)
	}
	do("log in", chromedp.SendKeys(chromedp.ID("name"), "olivia"), chromedp.SendKeys(chromedp.ID("password"), "olivia's password"),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("devices-total")))
	if got, online := text("#devices-total"), text("#devices-online"); got != "2" || online != "2" {
		t.Errorf("fleet shows %s devices, %s online; want 2 and 2", got, online)
	}
	shot("1-fleet.png")

	// Start a rollout from the form: a canary of one device, then every
	// device with an hour's bake (so that it is still running to pause).
	spec := "name: console rollout\nbundle: {model: digits, release: 1}\nstages:\n  - {name: canary, count: 1}\n" +
		"  - {name: everyone, percent: 100, bake: 1h}\ngates: {window: 1m, min_devices_reporting: 1}\n"
	do("rollouts page", chromedp.Navigate(srv.APIURL()+"/rollouts"), chromedp.WaitVisible(chromedp.ID("spec")),
		chromedp.SetValue(chromedp.ID("spec"), spec))
	shot("2-rollout-form.png")
	do("start the rollout", chromedp.Click(chromedp.ID("create")), chromedp.WaitVisible(chromedp.ID("phase")))
	loc = str("location", chromedp.Location())
	id := loc[strings.LastIndex(loc, "/")+1:]
	if got := text("#phase"); got != "running" {
		t.Errorf("a new rollout's phase reads %q", got)
	}
	if got := text("#stage"); got != "0" {
		t.Errorf("a new rollout's stage reads %q", got)
	}
	shot("3-rollout-canary.png")
	// Watch it advance: the live part refreshes itself; the page is never
	// reloaded (the marker set on the document stays).
	do("mark the page", chromedp.Evaluate[chromedp.Void](`window.flotillaMarker = 42`))
	waitText("#stage", "1")
	if marker, err := chromedp.Run(bctx, chromedp.Evaluate[int](`window.flotillaMarker || 0`)); err != nil || marker != 42 {
		t.Error("the rollout page reloaded: its live part should update in place")
	}
	shot("4-rollout-advanced.png")

	// Pause, with a reason, as olivia.
	do("pause", chromedp.SendKeys(chromedp.CSS(`form[action$="/pause"] input[name="reason"]`), "checking the canary"),
		chromedp.Click(chromedp.ID("pause")))
	waitText("#phase", "paused")
	shot("5-rollout-paused.png")
	audit, err := admin.RolloutAudit(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range audit {
		if e.Action == "rollout.pause" && e.Actor == "user:olivia" && strings.Contains(e.Detail, "checking the canary") {
			found = true
		}
	}
	if !found {
		t.Errorf("the pause is not in the audit trail as user:olivia with its reason: %+v", audit)
	}
	v, err := admin.Rollout(ctx, id, false)
	if err != nil || v.Phase != "paused" || v.CreatedBy != "user:olivia" {
		t.Errorf("rollout as the API sees it: %+v, %v", v, err)
	}

	// A viewer, in a browser of its own (separate cookies), is shown no
	// buttons; a resume posted by hand with its valid CSRF token reaches
	// the API, which refuses it: the rollout stays paused.
	if _, err := admin.CreateUser(ctx, api.UserRequest{Name: "vic", Role: "viewer", Password: "vic's password"}); err != nil {
		t.Fatal(err)
	}
	vctx, vcancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	defer vcancel()
	if err := chromedp.Do(vctx, chromedp.Navigate(srv.APIURL()+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "vic"), chromedp.SendKeys(chromedp.ID("password"), "vic's password"),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.ID("devices-total")),
		chromedp.Navigate(srv.APIURL()+"/rollouts/"+id), chromedp.WaitVisible(chromedp.ID("phase"))); err != nil {
		t.Fatalf("viewer's browser: %v", err)
	}
	if n, err := chromedp.Run(vctx, chromedp.Evaluate[int](`document.querySelectorAll('button.resume, button.pause, #create').length`)); err != nil || n != 0 {
		t.Errorf("the viewer is shown %d action buttons (%v)", n, err)
	}
	answer, err := chromedp.Run(vctx, chromedp.Evaluate[string](`(async () => {
		const csrf = document.querySelector('form.logout input[name=csrf]').value;
		const r = await fetch(location.pathname + '/resume', {method: 'POST', credentials: 'same-origin',
			headers: {'Content-Type': 'application/x-www-form-urlencoded'}, body: 'csrf=' + encodeURIComponent(csrf) + '&reason=viewer'});
		return r.status + ' ' + (await r.text());
	})()`, chromedp.EvalAwaitPromise))
	// The CSRF token was right: the refusal is the API's role check.
	if err != nil || !strings.HasPrefix(answer, "403 ") || !strings.Contains(answer, "needs the operator role; user vic has viewer") {
		t.Errorf("the viewer's hand-made resume: %v %.300q, want the API's 403", err, answer)
	}
	if v, err := admin.Rollout(ctx, id, false); err != nil || v.Phase != "paused" {
		t.Errorf("after the viewer's resume the rollout is %q (%v)", v.Phase, err)
	}
	vcancel()

	// The fleet's versions by model and the canary's slots, as reported.
	do("fleet page", chromedp.Navigate(srv.APIURL()+"/"), chromedp.WaitVisible(chromedp.ID("versions")))
	if v := text("#versions"); !strings.Contains(v, "digits") || !strings.Contains(v, "healthy") {
		t.Errorf("versions by model: %q", v)
	}
	do("device page", chromedp.Navigate(srv.APIURL()+"/devices/dev-0"), chromedp.WaitVisible(chromedp.ID("models")))
	if m := text("#models"); !strings.Contains(m, "digits") || !strings.Contains(m, "release 1") || !strings.Contains(m, "in slot") {
		t.Errorf("dev-0's models: %q", m)
	}
	shot("6-device.png")

	// Bundles: the released digits bundle, its signatures and size, and
	// the rollout that deployed it.
	do("bundles page", chromedp.Navigate(srv.APIURL()+"/bundles"), chromedp.WaitVisible(chromedp.ID("bundles")))
	row := text("#bundles tbody tr")
	for _, want := range []string{"digits", "onnx", "console rollout (paused, 2 devices)", "yes"} {
		if !strings.Contains(row, want) {
			t.Errorf("bundles row lacks %q: %q", want, row)
		}
	}
	// The operator keys sign targets with more keys than the root's
	// threshold; the page shows both.
	meta := text("#release-meta")
	var signed, threshold int
	if m := regexp.MustCompile(`signed by (\d+) keys? \(threshold (\d+)\)`).FindStringSubmatch(meta); m != nil {
		fmt.Sscan(m[1], &signed)
		fmt.Sscan(m[2], &threshold)
	}
	if threshold < 1 || signed < threshold {
		t.Errorf("release metadata line: %q", meta)
	}
	shot("7-bundles.png")

	// Drift: the charts of what the devices served, per feature, against
	// the bundle's baseline, with the thresholds marked.
	do("drift page", chromedp.Navigate(srv.APIURL()+"/drift?model=digits&release=1&range=1h&by=site"),
		chromedp.WaitVisible(chromedp.CSS("#drift-digits-1 svg.chart")))
	charts, lines := count("#drift-digits-1 > div.chart-box svg.chart"), count("#drift-digits-1 svg.chart g.series path")
	thresholds, cohortBars := count("#drift-digits-1 svg.chart g.threshold"), count("#cohorts rect.bar")
	if charts != 3 || lines == 0 || thresholds < 3 {
		t.Errorf("drift page: %d charts, %d feature lines, %d threshold lines; want 3 charts, lines, the thresholds", charts, lines, thresholds)
	}
	if cohortBars != 4 { // PSI and JS for site=north and site=south
		t.Errorf("cohort chart has %d bars, want 4", cohortBars)
	}
	psiChart := str("read the PSI chart", chromedp.TextContent(chromedp.CSS("#drift-digits-1 .chart-box:first-of-type svg")))
	for _, want := range []string{"PSI per feature", "PSI (unitless)", "time (UTC)", "alert"} {
		if !strings.Contains(psiChart, want) {
			t.Errorf("the PSI chart lacks %q: %q", want, psiChart)
		}
	}
	// The histograms, current against baseline: the 8 features with the
	// highest drift and the prediction, bars on the baseline's bins with
	// the edges marked, the scores and thresholds in the caption; and the
	// prediction's per cohort.
	hists, histBars, edges := count("#drift-digits-1 figure.hist svg.chart"), count("#drift-digits-1 figure.hist rect.bar"), count("#drift-digits-1 figure.hist line.edge")
	if links := count("#drift-digits-1 .feature-links a"); hists != 9 || histBars == 0 || edges == 0 || links != 64 {
		t.Errorf("drift page: %d histograms (want 8 features and the prediction), %d bars, %d edge ticks, %d links to a feature's (want 64)", hists, histBars, edges, links)
	}
	hist := str("read a histogram", chromedp.TextContent(chromedp.CSS("#drift-digits-1 figure.hist svg")))
	for _, want := range []string{"current against baseline", "share of values (%)", "baseline (", "current, 1h (", "PSI", "alert", "under", "over"} {
		if !strings.Contains(hist, want) {
			t.Errorf("the first histogram lacks %q: %q", want, hist)
		}
	}
	cohortHist := str("read the cohort histogram", chromedp.TextContent(chromedp.CSS("#cohort-hists svg")))
	if !strings.Contains(cohortHist, "site=north (") || !strings.Contains(cohortHist, "site=south (") || count("#cohort-hists svg.chart") != 1 {
		t.Errorf("cohort histogram: %q", cohortHist)
	}
	shot("8-drift.png")

	// The audit log page shows the login and the rollout's actions.
	do("audit page", chromedp.Navigate(srv.APIURL()+"/audit"), chromedp.WaitVisible(chromedp.ID("audit")))
	auditText := text("#audit")
	for _, want := range []string{"console.login", "rollout.create", "rollout.pause", "user:olivia", "user.create"} {
		if !strings.Contains(auditText, want) {
			t.Errorf("audit page lacks %q", want)
		}
	}
	if regexp.MustCompile(`olivia's password`).MatchString(auditText) {
		t.Error("the audit log shows a password")
	}
	shot("9-audit.png")
}
