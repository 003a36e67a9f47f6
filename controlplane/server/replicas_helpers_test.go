package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// sharedServices is what the control-plane replicas of a test share: one
// Mosquitto with dynamic security (its admin for the replicas' provisioning,
// a control-plane password) and one PostgreSQL database of the test's own.
type sharedServices struct {
	b               *mosquittotest.Broker
	dsn             string
	controlPassword string
}

func newSharedServices(t *testing.T) *sharedServices {
	t.Helper()
	return &sharedServices{
		b:               mosquittotest.Start(t, mosquittotest.Options{AdminUser: "dynsec-admin", AdminPassword: secret()}),
		dsn:             pgtest.Database(t),
		controlPassword: secret(),
	}
}

// config is a replica's configuration on the shared services, its data in
// dir; tests adjust it before start.
func (s *sharedServices) config(t *testing.T, dir string) server.Config {
	return server.Config{DataDir: dir, Database: s.dsn, Listen: freeAddr(t), MQTTURL: s.b.URL(),
		MQTTUser: "flotilla-control", MQTTPassword: s.controlPassword,
		Dynsec:    &server.Dynsec{AdminUser: s.b.AdminUser, AdminPassword: s.b.AdminPassword},
		WaveDelay: 300 * time.Millisecond, Version: "test", Logger: testLogger(t)}
}

// start starts a replica with cfg, closed when the test ends; a failure
// to start shows the broker's log.
func (s *sharedServices) start(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatalf("%v\nbroker log:\n%s", err, s.b.Log())
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}
