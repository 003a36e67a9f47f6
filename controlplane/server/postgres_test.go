package server_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// TestServerOnPostgres: a server on PostgreSQL enrols a device that then
// connects to the broker; restarted on the same database it still knows
// the device and its labels, and the data folder holds no SQLite file.
func TestServerOnPostgres(t *testing.T) {
	dsn := pgtest.Database(t)
	dir := t.TempDir()
	start := func() *server.Server {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		s, err := server.New(ctx, server.Config{DataDir: dir, Database: dsn, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s := start()
	if b := s.Store().Backend(); b != "postgres" {
		t.Fatalf("store backend %q", b)
	}
	ctx := context.Background()
	admin := adminClient(t, s, dir)
	tok, err := admin.CreateEnrolToken(ctx, api.EnrolTokenRequest{Name: "pg"})
	if err != nil {
		t.Fatal(err)
	}
	creds := enrol(t, s, tok.Token, "dev-pg")
	if _, err := admin.Label(ctx, "dev-pg", map[string]string{"site": "north"}, nil); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2 := start()
	admin2 := adminClient(t, s2, dir)
	if v, err := admin2.Device(ctx, "dev-pg"); err != nil || v.Labels["site"] != "north" {
		t.Fatalf("device after restart: %+v, %v", v, err)
	}
	d, err := connect(t, s2, creds, creds.GetMqttPassword())
	if err != nil {
		t.Fatalf("device cannot connect to the restarted server: %v", err)
	}
	d.client.Disconnect(100)
	if _, err := os.Stat(filepath.Join(dir, "flotilla.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a SQLite file in the data folder of a PostgreSQL server: %v", err)
	}
}

// TestServerRefusesUnknownDatabase: a database that is neither empty nor
// a postgres:// URL is refused at start.
func TestServerRefusesUnknownDatabase(t *testing.T) {
	_, err := server.New(context.Background(), server.Config{DataDir: t.TempDir(), Database: "mysql://x", Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0"})
	if err == nil {
		t.Fatal("mysql:// accepted")
	}
}
