package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// deviceCertTTL is how long a device client certificate is valid. Devices
// renew by re-enrolling with their key (a later issue adds renewal over MQTT).
const deviceCertTTL = 365 * 24 * time.Hour

// newSecret returns a 256-bit random secret, URL-safe base64.
func newSecret() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("registry: crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// Enrol admits a device that presents a valid bootstrap token and proves it
// holds the private key of the public key it registers. The response
// carries the device's MQTT secret; only its hash is kept.
//
// Enrolment is idempotent for the same device and key: a device that lost
// the response may enrol again with the same token and key and gets a fresh
// secret, without using the token again. Any other reuse of an ID is a
// conflict: IDs are never reassigned, not even after decommissioning.
func (r *Registry) Enrol(ctx context.Context, req *pb.EnrolRequest) (*pb.EnrolResponse, error) {
	if err := req.Validate(); err != nil {
		r.metrics.Add("enrol_refused", 1)
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	now := r.cfg.Now()
	tokenHash := hashSecret([]byte(req.GetToken()))
	secret := newSecret()

	var facts []byte
	if req.GetFacts() != nil {
		b, err := wire.Encode(req.GetFacts())
		if err != nil {
			return nil, fmt.Errorf("%w: facts: %w", ErrInvalid, err)
		}
		facts = b
	}
	var certPEM []byte
	var serial string
	if req.GetWantCertificate() && r.cfg.Issuer != nil {
		var err error
		certPEM, serial, err = r.cfg.Issuer.IssueDeviceCert(req.GetDeviceId(), ed25519.PublicKey(req.GetPublicKey()), deviceCertTTL, now)
		if err != nil {
			return nil, fmt.Errorf("issue device certificate: %w", err)
		}
	}
	d := store.Device{
		ID:             req.GetDeviceId(),
		PublicKey:      req.GetPublicKey(),
		CredentialHash: hashSecret([]byte(secret)),
		Labels:         req.GetLabels(),
		Facts:          facts,
		EnrolledAt:     now.UnixMilli(),
		CertSerial:     serial,
	}
	action := "device.enrol"
	_, err := r.cfg.Store.EnrolDevice(ctx, tokenHash, d, now.UnixMilli())
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrTokenExhausted) {
		// Perhaps the device enrolled with this token and lost the answer
		// (a single-use token is exhausted by then).
		rerr := r.reEnrol(ctx, tokenHash, d)
		switch {
		case rerr == nil:
			action, err = "device.re-enrol", nil
		case errors.Is(err, store.ErrConflict):
			err = rerr
		}
	}
	if err != nil {
		r.metrics.Add("enrol_refused", 1)
		return nil, enrolError(err)
	}
	if r.cfg.Credentials != nil {
		if err := r.cfg.Credentials.Provision(ctx, d.ID, secret); err != nil {
			// The device is recorded but the broker does not know it yet; the
			// device retries enrolment, which takes the re-enrol path.
			return nil, fmt.Errorf("%w: provision broker credentials: %w", ErrUnavailable, err)
		}
	}
	r.metrics.Add("enrolled", 1)
	r.audit(ctx, "device:"+d.ID, action, d.ID, fmt.Sprintf("labels=%v certificate=%v", d.Labels, certPEM != nil))
	r.log.Info("device enrolled", "device", d.ID, "re_enrol", action == "device.re-enrol")
	r.publishDesired(ctx, d.ID)
	return &pb.EnrolResponse{
		DeviceId:        d.ID,
		MqttUrl:         r.cfg.MQTTURL,
		MqttUsername:    d.ID,
		MqttPassword:    secret,
		CaPem:           r.cfg.CAPEM,
		CertificatePem:  certPEM,
		TopicPrefix:     r.cfg.Scheme.Prefix(),
		ProtocolVersion: wire.ProtocolVersion,
	}, nil
}

// reEnrol rotates the secret of a device that enrols again with the token
// it first enrolled with and the same key.
func (r *Registry) reEnrol(ctx context.Context, tokenHash []byte, d store.Device) error {
	have, err := r.cfg.Store.Device(ctx, d.ID)
	if err != nil {
		return err
	}
	tok, err := r.cfg.Store.EnrolTokenByHash(ctx, tokenHash)
	if err != nil {
		return err
	}
	if !have.Active() || have.EnrolTokenID != tok.ID || !bytes.Equal(have.PublicKey, d.PublicKey) {
		return fmt.Errorf("device %s: %w", d.ID, store.ErrConflict)
	}
	if tok.RevokedAt != 0 {
		return store.ErrTokenRevoked
	}
	return r.cfg.Store.SetDeviceCredential(ctx, d.ID, d.CredentialHash)
}

func enrolError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return ErrUnauthorized
	case errors.Is(err, store.ErrConflict):
		return fmt.Errorf("%w: device ID is taken", ErrConflict)
	case errors.Is(err, store.ErrTokenExhausted), errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenRevoked):
		return fmt.Errorf("%w: %w", ErrGone, err)
	case errors.Is(err, store.ErrInvalid):
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return err
}
