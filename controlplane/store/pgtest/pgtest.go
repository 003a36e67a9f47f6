// Package pgtest gives tests a PostgreSQL database of their own: created
// empty on the server FLOTILLA_TEST_POSTGRES names (by default the local
// one every development and CI machine runs, 127.0.0.1:5432 with trust
// authentication) and dropped when the test ends. Tests never touch the
// server's other databases or its configuration.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// DefaultServer is the server used when FLOTILLA_TEST_POSTGRES is unset:
// a database there to connect to while creating and dropping others.
const DefaultServer = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Database creates a fresh database and returns its DSN; it is dropped
// (its connections ended first) when t ends. Without a reachable server
// the test fails under CI (CI set) and is skipped elsewhere.
func Database(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("FLOTILLA_TEST_POSTGRES")
	if admin == "" {
		admin = DefaultServer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL at %s: %v (make deps installs and starts it)", redact(admin), err)
		}
		t.Skipf("no PostgreSQL at %s: %v", redact(admin), err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	name := "flotilla_test_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(admin)
	if err != nil || u.Scheme == "" {
		t.Fatalf("FLOTILLA_TEST_POSTGRES must be a postgres:// URL: %q", redact(admin))
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides a URL's password.
func redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}
