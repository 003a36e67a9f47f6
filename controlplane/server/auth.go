package server

import (
	"context"
	"crypto/x509"
	"errors"

	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
)

func (s *Server) setRegistry(r *registry.Registry) {
	s.regMu.Lock()
	s.registry = r
	s.regMu.Unlock()
}

func (s *Server) currentRegistry() *registry.Registry {
	s.regMu.RLock()
	defer s.regMu.RUnlock()
	return s.registry
}

// brokerAuth lets the embedded broker start before the registry exists;
// until then it refuses every client.
type brokerAuth Server

var errStarting = errors.New("control plane is starting")

func (a *brokerAuth) Authenticate(ctx context.Context, clientID, username string, password []byte, cert *x509.Certificate) (broker.Principal, error) {
	r := (*Server)(a).currentRegistry()
	if r == nil {
		return broker.Principal{}, errStarting
	}
	return r.Authenticate(ctx, clientID, username, password, cert)
}

func (a *brokerAuth) CanPublish(p broker.Principal, topic string) bool {
	r := (*Server)(a).currentRegistry()
	return r != nil && r.CanPublish(p, topic)
}

func (a *brokerAuth) CanSubscribe(p broker.Principal, filter string) bool {
	r := (*Server)(a).currentRegistry()
	return r != nil && r.CanSubscribe(p, filter)
}

// embeddedCredentials: the embedded broker authenticates from the store, so
// provisioning is a no-op and revoking drops live connections.
type embeddedCredentials struct{ b *broker.Embedded }

func (embeddedCredentials) Provision(context.Context, string, string) error { return nil }

func (c embeddedCredentials) Revoke(_ context.Context, deviceID string) error {
	c.b.Disconnect(deviceID)
	return nil
}
