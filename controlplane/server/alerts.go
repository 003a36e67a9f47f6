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
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/rollout"
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
}

// Alert is one alert in Alertmanager's format.
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// alerter posts alerts to the configured webhooks, off the caller's
// goroutine.
type alerter struct {
	s      *Server
	hooks  []string
	client *http.Client
}

func (s *Server) openAlerts() error {
	c := s.cfg.Alerts
	for _, h := range c.Webhooks {
		u, err := url.Parse(h)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("alert webhook %q: an http or https URL is required", h)
		}
	}
	s.alerts = &alerter{s: s, hooks: c.Webhooks, client: &http.Client{Timeout: cmp.Or(c.Timeout, 10*time.Second)}}
	return nil
}

// send posts alerts to every webhook in the background.
func (a *alerter) send(alerts []Alert) {
	if len(a.hooks) == 0 || len(alerts) == 0 {
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
			out = append(out, Alert{Labels: l, StartsAt: now.UTC(), Annotations: map[string]string{
				"summary": fmt.Sprintf("device %s refused or rolled back %s release %d", d.Device, d.Model, d.Release), "description": d.Reason}})
		case d.Kind == rollout.DecideStranded:
			l := base(AlertRolloutStranded, "warning", d)
			l["device"] = d.Device
			out = append(out, Alert{Labels: l, StartsAt: now.UTC(), Annotations: map[string]string{
				"summary": fmt.Sprintf("device %s cannot be sent back", d.Device), "description": d.Reason}})
		}
	}
	a.send(out)
}
