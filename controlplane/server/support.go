package server

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
)

// supportService joins the support-bundle receiver to the registry's
// command channel: the API's Support.
type supportService struct {
	*supportbundle.Service
	s *Server
}

// openSupport opens the support-bundle receiver over the store (which
// replicas share), importing DataDir/support, where an earlier release
// kept bundles, once; the registry must exist.
func (s *Server) openSupport() error {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(s.ca.CAPEM())
	svc, err := supportbundle.New(supportbundle.Config{
		Store: s.store, Dir: filepath.Join(s.cfg.DataDir, "support"), Scheme: s.scheme, Publisher: s.mqtt, Roots: roots,
		DeviceKey: func(ctx context.Context, id string) (ed25519.PublicKey, error) {
			d, err := s.store.Device(ctx, id)
			if err != nil {
				return nil, err
			}
			if !d.Active() || len(d.PublicKey) != ed25519.PublicKeySize {
				return nil, fmt.Errorf("device %s is decommissioned or has no key", id)
			}
			return ed25519.PublicKey(d.PublicKey), nil
		},
		Now: s.cfg.Now, Logger: s.log.With("component", "support"),
	})
	if err != nil {
		return err
	}
	s.support = &supportService{Service: svc, s: s}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer svc.Close()
		t := time.NewTicker(time.Hour)
		defer t.Stop()
		for {
			select {
			case <-s.life.Done():
				return
			case <-t.C:
				svc.Expire()
			}
		}
	}()
	return nil
}

// Request expects an upload, sends the device the command and waits for
// its answer: the device built the bundle and starts uploading it.
func (p *supportService) Request(ctx context.Context, actor, deviceID string) (supportbundle.Info, error) {
	d, err := p.s.store.Device(ctx, deviceID)
	if err != nil || !d.Active() {
		return supportbundle.Info{}, fmt.Errorf("%w: device %s", registry.ErrNotFound, deviceID)
	}
	in, err := p.Expect(deviceID, actor)
	if err != nil {
		return in, err
	}
	rep, err := p.s.registry.CommandWith(ctx, actor, deviceID, "support-bundle",
		registry.CommandOptions{UploadID: in.ID, MaxSize: uint64(p.MaxSize())})
	switch {
	case err != nil:
		p.Fail(deviceID, in.ID, "the device did not answer: "+err.Error())
		return in, err
	case !rep.OK:
		p.Fail(deviceID, in.ID, "the device refused: "+rep.Error)
		return in, fmt.Errorf("%w: the device refused: %s", registry.ErrConflict, rep.Error)
	}
	return p.Get(deviceID, in.ID)
}
