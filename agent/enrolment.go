package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/flotilla-edge/flotilla/agent/enrol"
	"github.com/flotilla-edge/flotilla/agent/install"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/proto/pin"
)

// ErrNotConfigured is returned by Run when the device is not enrolled and
// the configuration lacks what enrolment needs.
var ErrNotConfigured = errors.New("agent: not enrolled, and enrolment is not configured")

func (a *Agent) openState(ctx context.Context) (*state.DB, error) {
	open := state.Open
	if a.cfg.MemoryState {
		open = state.OpenMemory
	}
	db, err := open(ctx, a.cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	rev, _, err := db.Desired(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.update(func(s *Status) { s.DesiredRevision = rev })
	return db, nil
}

// ensureEnrolled returns the stored identity, enrolling first if there is
// none. Transient failures are retried with jittered backoff; a refusal by
// the server, or a server that fails the pinned fingerprint, is returned.
func (a *Agent) ensureEnrolled(ctx context.Context, db *state.DB) (state.Identity, error) {
	id, err := db.Identity(ctx)
	if err == nil {
		if a.cfg.DeviceID != "" && id.DeviceID != a.cfg.DeviceID {
			return state.Identity{}, fmt.Errorf("agent: data folder %s belongs to device %q, not %q",
				a.cfg.DataDir, id.DeviceID, a.cfg.DeviceID)
		}
		a.update(func(s *Status) { s.DeviceID = id.DeviceID })
		return id, nil
	}
	if !errors.Is(err, state.ErrNotEnrolled) {
		return state.Identity{}, fmt.Errorf("agent: %w", err)
	}
	switch {
	case a.cfg.DeviceID == "":
		return state.Identity{}, fmt.Errorf("%w: device ID is missing", ErrNotConfigured)
	case a.cfg.ServerURL == "":
		return state.Identity{}, fmt.Errorf("%w: server URL is missing", ErrNotConfigured)
	case a.cfg.EnrolToken == "":
		return state.Identity{}, fmt.Errorf("%w: enrol token is missing", ErrNotConfigured)
	}
	a.setState(StateEnrolling)
	key, err := state.LoadOrCreateKey(a.cfg.DataDir)
	if err != nil {
		return state.Identity{}, fmt.Errorf("agent: %w", err)
	}
	client, err := a.enrolClient()
	if err != nil {
		return state.Identity{}, err
	}
	if a.cfg.HTTPClient == nil {
		// Enrolment is once: the client's idle connection would only hold
		// a socket open for its idle timeout.
		defer client.CloseIdleConnections()
	}
	req := enrol.NewRequest(key, a.cfg.DeviceID, a.cfg.EnrolToken, a.facts(), a.cfg.Labels)
	for attempt := 0; ; attempt++ {
		a.count(CounterEnrolAttempts)
		resp, err := enrol.Enrol(ctx, client, a.cfg.ServerURL, req)
		if err == nil && a.pin != nil {
			err = enrol.CheckCA(resp.GetCaPem(), a.pin)
		}
		if err == nil {
			id = state.Identity{
				DeviceID:     a.cfg.DeviceID,
				MQTTURL:      resp.GetMqttUrl(),
				MQTTUsername: resp.GetMqttUsername(),
				MQTTPassword: resp.GetMqttPassword(),
				TopicPrefix:  resp.GetTopicPrefix(),
				CAPEM:        resp.GetCaPem(),
				CertPEM:      resp.GetCertificatePem(),
				EnrolledAt:   a.clock.Now(),
			}
			if len(id.CAPEM) == 0 && a.cfg.CAFile != "" {
				if id.CAPEM, err = os.ReadFile(a.cfg.CAFile); err != nil {
					return state.Identity{}, fmt.Errorf("agent: %w", err)
				}
			}
			if id.MQTTUsername == "" {
				id.MQTTUsername = id.DeviceID
			}
			// The bundle trust roots, before the identity: a crash between
			// the two re-enrols and writes them again.
			if err := install.Provision(stagingDir(a.cfg.DataDir), resp.GetReleaseRoot(), resp.GetDirectorRoot()); err != nil {
				return state.Identity{}, fmt.Errorf("agent: %w", err)
			}
			if err := db.SaveIdentity(ctx, id); err != nil {
				return state.Identity{}, fmt.Errorf("agent: %w", err)
			}
			a.journal(ctx, db, "info", "enrol.ok", "enrolled with "+a.cfg.ServerURL)
			a.log.Info("enrolled", "device", id.DeviceID, "mqtt", id.MQTTURL, "certificate", len(id.CertPEM) > 0)
			a.update(func(s *Status) { s.DeviceID = id.DeviceID; s.LastError = "" })
			return id, nil
		}
		a.update(func(s *Status) { s.LastError = err.Error() })
		if ctx.Err() != nil {
			return state.Identity{}, ctx.Err()
		}
		if fatalEnrolError(err) {
			a.journal(ctx, db, "error", "enrol.refused", err.Error())
			return state.Identity{}, fmt.Errorf("agent: enrolment refused: %w", err)
		}
		d := Backoff(attempt, backoffBase, backoffCap, a.rng)
		a.log.Warn("enrolment failed, retrying", "err", err, "in", d.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return state.Identity{}, ctx.Err()
		case <-a.clock.After(d):
		}
	}
}

// fatalEnrolError reports whether retrying cannot help: the server refused
// the request, or the server is not the one the device was told to trust.
func fatalEnrolError(err error) bool {
	var se *enrol.Error
	if errors.As(err, &se) {
		return !se.Temporary()
	}
	var uaErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	var verErr *tls.CertificateVerificationError
	return errors.Is(err, enrol.ErrFingerprint) || errors.As(err, &uaErr) ||
		errors.As(err, &hostErr) || errors.As(err, &invErr) || errors.As(err, &verErr)
}

// enrolClient returns the HTTP client for enrolment: the injected one, or
// one that trusts CAFile, or the pinned CA, or the system roots.
func (a *Agent) enrolClient() (*http.Client, error) {
	if a.cfg.HTTPClient != nil {
		return a.cfg.HTTPClient, nil
	}
	var tc *tls.Config
	switch {
	case a.cfg.CAFile != "":
		var err error
		if tc, err = enrol.CAFileTLS(a.cfg.CAFile); err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
	case a.pin != nil:
		tc = pin.TLSConfig(a.pin)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = http.ProxyFromEnvironment
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// journal records an event, logging rather than failing if it cannot.
func (a *Agent) journal(ctx context.Context, db *state.DB, level, code, msg string) {
	if err := db.Record(ctx, state.Event{At: a.clock.Now(), Level: level, Code: code, Message: msg}); err != nil {
		a.log.Warn("journal", "err", err)
	}
}
