package registry

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Errors of Authenticate.
var (
	errBadCredentials = errors.New("bad username or password")
	errClientID       = errors.New("a device must connect with its device ID as client ID")
)

// Authenticate checks an MQTT CONNECT (broker.Authenticator). The control
// plane's own connections use ServiceUser. A device uses its ID as username
// and client ID, with its secret as password or, instead of the password, a
// client certificate the control plane issued for its key (the TLS layer
// has already verified the chain).
func (r *Registry) Authenticate(ctx context.Context, clientID, username string, password []byte, cert *x509.Certificate) (broker.Principal, error) {
	if username == ServiceUser {
		h := sha256.Sum256(password)
		if subtle.ConstantTimeCompare(h[:], r.cfg.ServiceHash[:]) == 1 && r.cfg.ServiceHash != [sha256.Size]byte{} {
			return broker.Principal{Kind: broker.Service, ID: ServiceUser}, nil
		}
		r.metrics.Add("auth_refused", 1)
		return broker.Principal{}, errBadCredentials
	}
	if topic.ValidID(username) != nil {
		r.metrics.Add("auth_refused", 1)
		return broker.Principal{}, errBadCredentials
	}
	if clientID != username {
		r.metrics.Add("auth_refused", 1)
		return broker.Principal{}, errClientID
	}
	if cert != nil && len(password) == 0 {
		return r.authenticateCert(ctx, username, cert)
	}
	hash, active, err := r.cfg.Store.DeviceCredential(ctx, username)
	if err != nil || !active || !equalHash(hash, hashSecret(password)) {
		r.metrics.Add("auth_refused", 1)
		if err != nil && !isNotFound(err) {
			return broker.Principal{}, fmt.Errorf("look up device credential: %w", err)
		}
		return broker.Principal{}, errBadCredentials
	}
	return broker.Principal{Kind: broker.Device, ID: username}, nil
}

// authenticateCert accepts a verified client certificate whose common name
// is the device and whose serial is the one issued at enrolment, so
// decommissioning (which forgets the serial) revokes it at once.
func (r *Registry) authenticateCert(ctx context.Context, deviceID string, cert *x509.Certificate) (broker.Principal, error) {
	d, err := r.cfg.Store.Device(ctx, deviceID)
	if err != nil || !d.Active() || cert.Subject.CommonName != deviceID || d.CertSerial == "" ||
		d.CertSerial != cert.SerialNumber.Text(16) {
		r.metrics.Add("auth_refused", 1)
		return broker.Principal{}, errBadCredentials
	}
	return broker.Principal{Kind: broker.Device, ID: deviceID}, nil
}

// CanPublish implements broker.Authorizer from the topic table.
func (r *Registry) CanPublish(p broker.Principal, name string) bool {
	switch p.Kind {
	case broker.Service:
		return r.cfg.Scheme.ControlMay(name)
	case broker.Device:
		return r.cfg.Scheme.DeviceMayPublish(p.ID, name)
	}
	return false
}

// CanSubscribe implements broker.Authorizer from the topic table.
func (r *Registry) CanSubscribe(p broker.Principal, filter string) bool {
	switch p.Kind {
	case broker.Service:
		return r.cfg.Scheme.ControlMay(filter)
	case broker.Device:
		return r.cfg.Scheme.DeviceMaySubscribe(p.ID, filter)
	}
	return false
}
