package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/rollout"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// AlertConfig says where alerts go: gate breaches, on-device rollbacks.
type AlertConfig struct {
	// Webhooks receive every alert as a POST of a JSON array of alerts in
	// Prometheus Alertmanager's format (an Alertmanager's
	// /api/v2/alerts takes it as is).
	Webhooks []string
	// Timeout bounds each POST; default 10 s. A failed POST is logged and
	// counted (alerts_failed), not retried.
	Timeout time.Duration
	// Repeat is how long an alert about one thing (a device's drift on a
	// model release, a device's rollback of one) is not sent again after
	// it was sent; default 1 hour. Alerts left out are counted
	// (alerts_deduplicated).
	Repeat time.Duration
}

// DefaultAlertRepeat is AlertConfig.Repeat's default.
const DefaultAlertRepeat = time.Hour

// maxAlertKeys bounds the alerts remembered for de-duplication; past it
// the oldest are forgotten first.
const maxAlertKeys = 100_000

// Alert is one alert in Alertmanager's format.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
	// key names what the alert is about, for de-duplication; "" is never
	// de-duplicated.
	key string
}

// alerter posts alerts to the configured webhooks, off the caller's
// goroutine, each about one thing at most once per Repeat.
type alerter struct {
	s      *Server
	hooks  []string
	client *http.Client
	repeat time.Duration

	mu   sync.Mutex
	sent map[string]time.Time // by key: when last sent
}

func (s *Server) openAlerts() error {
	c := s.cfg.Alerts
	for _, h := range c.Webhooks {
		u, err := url.Parse(h)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alert webhook %q: an http or https URL is required", h)
		}
	}
	s.alerts = &alerter{s: s, hooks: c.Webhooks, client: &http.Client{Timeout: cmp.Or(c.Timeout, 10*time.Second)},
		repeat: cmp.Or(c.Repeat, DefaultAlertRepeat), sent: map[string]time.Time{}}
	return nil
}

// fresh drops the alerts whose key was sent less than Repeat before now,
// and notes the others as sent now.
func (a *alerter) fresh(alerts []Alert, now time.Time) []Alert {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := alerts[:0:0]
	for _, al := range alerts {
		if al.key != "" {
			if last, ok := a.sent[al.key]; ok && now.Sub(last) < a.repeat && !now.Before(last) {
				a.s.metrics.Add("alerts_deduplicated", 1)
				continue
			}
			a.sent[al.key] = now
		}
		out = append(out, al)
	}
	if len(a.sent) > maxAlertKeys {
		for k, at := range a.sent {
			if now.Sub(at) >= a.repeat {
				delete(a.sent, k)
			}
		}
		for k := range a.sent { // still near: forget any, down to 90%
			if len(a.sent) <= maxAlertKeys*9/10 {
				break
			}
			delete(a.sent, k)
		}
	}
	return out
}

// send posts alerts to every webhook in the background, less those sent
// less than Repeat before now.
func (a *alerter) send(alerts []Alert, now time.Time) {
	if len(a.hooks) == 0 || len(alerts) == 0 {
		return
	}
	if alerts = a.fresh(alerts, now); len(alerts) == 0 {
		return
	}
	body, err := json.Marshal(alerts)
	if err != nil {
		a.s.log.Warn("alerts not encoded", "err", err)
		return
	}
	for _, hook := range a.hooks {
		a.s.bg.Add(1)
		go func() {
			defer a.s.bg.Done()
			if err := a.post(a.s.life, hook, body); err != nil {
				a.s.metrics.Add("alerts_failed", 1)
				a.s.log.Warn("alert not delivered", "webhook", hook, "err", err)
				return
			}
			a.s.metrics.Add("alerts_sent", int64(len(alerts)))
		}()
	}
}

func (a *alerter) post(ctx context.Context, url string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Alert names.
const (
	AlertGateBreached    = "FlotillaRolloutGateBreached"
	AlertDeviceRollback  = "FlotillaDeviceRolledBack"
	AlertDriftAlert      = "FlotillaDriftAlert"
	AlertRolloutStranded = "FlotillaRolloutDeviceStranded"
)

// rolloutDecisions alerts on a pass's breaches (pause or roll back on a
// gate; a drift gate's breach is also a drift alert), devices that
// rolled the release back by themselves, and devices that cannot be sent
// back.
func (a *alerter) rolloutDecisions(rec *rollout.Record, ds []rollout.Decision, now time.Time) {
	var out []Alert
	base := func(name, severity string, d rollout.Decision) map[string]string {
		return map[string]string{"alertname": name, "severity": severity, "service": "flotilla", "rollout": rec.State.ID,
			"model": rec.Spec.Bundle.Model, "release": strconv.FormatUint(rec.Spec.Bundle.Release, 10), "stage": strconv.Itoa(d.Stage)}
	}
	for _, d := range ds {
		switch {
		case (d.Kind == rollout.DecidePause || d.Kind == rollout.DecideRollbackAll) && d.Breach != nil:
			l := base(AlertGateBreached, "critical", d)
			l["gate"], l["action"] = d.Breach.Gate, string(d.Kind)
			out = append(out, Alert{Labels: l, StartsAt: now.UTC(), Annotations: map[string]string{
				"summary":     fmt.Sprintf("rollout %s: gate %s breached; %s", rec.State.ID, d.Breach.Gate, d.Kind),
				"description": d.String(), "value": strconv.FormatFloat(d.Breach.Value, 'g', -1, 64), "limit": d.Breach.Limit}})
			if d.Breach.Gate == "drift" {
				l := base(AlertDriftAlert, "warning", d)
				out = append(out, Alert{Labels: l, StartsAt: now.UTC(), Annotations: map[string]string{
					"summary": fmt.Sprintf("%s release %d drifts from its baseline", rec.Spec.Bundle.Model, rec.Spec.Bundle.Release), "description": d.Breach.String()}})
			}
		case d.Kind == rollout.DecideDeviceFailed:
			l := base(AlertDeviceRollback, "warning", d)
			l["device"] = d.Device
			out = append(out, Alert{Labels: l, StartsAt: now.UTC(), key: rollbackKey(d.Device, d.Model, d.Release), Annotations: map[string]string{
				"summary": fmt.Sprintf("device %s refused or rolled back %s release %d", d.Device, d.Model, d.Release), "description": d.Reason}})
		case d.Kind == rollout.DecideStranded:
			l := base(AlertRolloutStranded, "warning", d)
			l["device"] = d.Device
			out = append(out, Alert{Labels: l, StartsAt: now.UTC(), Annotations: map[string]string{
				"summary": fmt.Sprintf("device %s cannot be sent back", d.Device), "description": d.Reason}})
		}
	}
	a.send(out, now)
}

// rollbackKey and driftKey name what a device alert is about: the same
// rollback reported by a rollout pass, a device event and the device's
// reported state is one alert.
func rollbackKey(device, model string, rel uint64) string {
	return fmt.Sprintf("rollback\x00%s\x00%s\x00%d", device, model, rel)
}

func driftKey(device, model string, rel uint64) string {
	return fmt.Sprintf("drift\x00%s\x00%s\x00%d", device, model, rel)
}

// Device event codes that raise alerts outside rollouts.
var (
	rollbackEventCodes = map[string]bool{"model.rollback": true, "model.rolledback": true, "model.rolled_back": true, "model.rejected": true}
	driftEventCodes    = map[string]bool{"drift.alert": true, "model.drift": true}
)

// deviceAlert is an alert about one device's model release, outside any
// rollout.
func deviceAlert(name, severity, device, model string, rel uint64, at time.Time, key string, ann map[string]string) Alert {
	l := map[string]string{"alertname": name, "severity": severity, "service": "flotilla", "device": device, "model": model}
	if rel != 0 {
		l["release"] = strconv.FormatUint(rel, 10)
	}
	return Alert{Labels: l, Annotations: ann, StartsAt: at.UTC(), key: key}
}

// telemetryStored alerts on what the telemetry ingest just committed
// (messages stored before, dup, are left out): summaries whose on-device
// drift scores crossed the thresholds (scores.alert), and device events
// saying the device rolled a release back or refused it, or that drift
// crossed the thresholds. Each is sent once per AlertConfig.Repeat per
// device, model and release.
func (a *alerter) telemetryStored(msgs []store.TelemetryMessage, dup []bool, now time.Time) {
	if len(a.hooks) == 0 {
		return
	}
	var out []Alert
	for i, m := range msgs {
		if i < len(dup) && dup[i] {
			continue
		}
		for _, sm := range m.Summaries {
			if len(sm.Payload) > maxSummaryPayload {
				continue
			}
			var ws pb.WindowSummary
			if err := wire.Decode(sm.Payload, maxSummaryPayload, &ws); err != nil || !ws.GetScores().GetAlert() {
				continue
			}
			sc := ws.GetScores()
			out = append(out, deviceAlert(AlertDriftAlert, "warning", m.DeviceID, ws.GetModel(), ws.GetRelease(), now,
				driftKey(m.DeviceID, ws.GetModel(), ws.GetRelease()), map[string]string{
					"summary": fmt.Sprintf("device %s: %s release %d drifts from its baseline", m.DeviceID, ws.GetModel(), ws.GetRelease()),
					"description": fmt.Sprintf("window %s to %s: max JS %.3g, max PSI %.3g, max KS %.3g",
						time.UnixMilli(ws.GetStartMs()).UTC().Format(time.RFC3339), time.UnixMilli(ws.GetEndMs()).UTC().Format(time.RFC3339),
						sc.GetMaxJs(), sc.GetMaxPsi(), sc.GetMaxKs()),
					"max_js": strconv.FormatFloat(sc.GetMaxJs(), 'g', 4, 64), "max_psi": strconv.FormatFloat(sc.GetMaxPsi(), 'g', 4, 64)}))
		}
		for _, e := range m.Events {
			model := e.Attrs["model"]
			rel, _ := strconv.ParseUint(e.Attrs["release"], 10, 64)
			ann := map[string]string{"summary": fmt.Sprintf("device %s: %s", m.DeviceID, e.Code), "description": e.Message}
			switch {
			case rollbackEventCodes[e.Code]:
				out = append(out, deviceAlert(AlertDeviceRollback, "warning", m.DeviceID, model, rel, now, rollbackKey(m.DeviceID, model, rel), ann))
			case driftEventCodes[e.Code]:
				out = append(out, deviceAlert(AlertDriftAlert, "warning", m.DeviceID, model, rel, now, driftKey(m.DeviceID, model, rel), ann))
			}
		}
	}
	a.send(out, now)
}

// reported alerts on a device's reported state: a model whose rollback
// count grew since its previous report (before; nil when there was none,
// which raises nothing) was rolled back on the device.
func (a *alerter) reported(device string, before, after []*pb.ModelState, known bool, now time.Time) {
	if len(a.hooks) == 0 || !known {
		return
	}
	prev := map[string]*pb.ModelState{}
	for _, m := range before {
		prev[m.GetName()] = m
	}
	var out []Alert
	for _, m := range after {
		p, ok := prev[m.GetName()]
		if !ok || m.GetRollbacks() <= p.GetRollbacks() {
			continue
		}
		// The release rolled back is the one active before, unless the
		// device reports which.
		rel := p.GetActiveRelease()
		out = append(out, deviceAlert(AlertDeviceRollback, "warning", device, m.GetName(), rel, now, rollbackKey(device, m.GetName(), rel),
			map[string]string{"summary": fmt.Sprintf("device %s rolled back %s release %d", device, m.GetName(), rel),
				"description": cmp.Or(m.GetLastError(), "rolled back on the device")}))
	}
	a.send(out, now)
}

// alertingStore is the telemetry ingest's store: what it commits is then
// handed to the alerter (telemetryStored).
type alertingStore struct {
	*store.Store
	s *Server
}

// StoreTelemetry implements telemetry.Store.
func (a alertingStore) StoreTelemetry(ctx context.Context, msgs []store.TelemetryMessage) ([]bool, error) {
	dup, err := a.Store.StoreTelemetry(ctx, msgs)
	if err == nil {
		a.s.alerts.telemetryStored(msgs, dup, a.s.cfg.Now())
	}
	return dup, err
}
