package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Dynsec is how the control plane manages device credentials on an
// external Mosquitto with the dynamic-security plugin: it connects as the
// plugin's admin, makes sure the default ACL denies, and creates its own
// control-plane user (Config.MQTTUser/MQTTPassword) before that user
// connects.
type Dynsec struct {
	AdminUser, AdminPassword string
}

// credentials connects the admin and returns the device credential sink.
func (d Dynsec) credentials(ctx context.Context, s *Server, scheme topic.Scheme) (registry.CredentialSink, error) {
	if d.AdminUser == "" || d.AdminPassword == "" {
		return nil, errors.New("dynamic security needs the admin user and password")
	}
	if s.cfg.MQTTPassword == "" {
		return nil, errors.New("dynamic security needs a control-plane MQTT password to provision")
	}
	s.admin = newMQTT(mqttOptions{
		User: d.AdminUser, Password: d.AdminPassword, CAPEM: s.brokerCAPEM(),
		ClientID: "flotilla-dynsec-" + instanceID(), Logger: s.log.With("component", "dynsec"),
	})
	if err := s.admin.Connect(ctx, s.cfg.MQTTURL); err != nil {
		return nil, fmt.Errorf("dynsec admin: %w", err)
	}
	ds, err := mosquitto.NewDynsec(ctx, s.admin.Client(), scheme)
	if err != nil {
		return nil, err
	}
	s.admin.afterReconnect(func() {
		if err := ds.Resubscribe(context.Background()); err != nil {
			s.log.Error("dynsec resubscribe", "err", err)
		}
	})
	if err := ds.EnsureBaseline(ctx); err != nil {
		return nil, err
	}
	if err := ds.ProvisionControl(ctx, s.cfg.MQTTUser, s.cfg.MQTTPassword); err != nil {
		return nil, err
	}
	return ds, nil
}

// brokerCAPEM is the CA the control plane trusts for an external broker:
// the operator's, or its own.
func (s *Server) brokerCAPEM() []byte {
	if len(s.cfg.MQTTCAPEM) > 0 {
		return s.cfg.MQTTCAPEM
	}
	return s.ca.CAPEM()
}
