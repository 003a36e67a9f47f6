package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

const phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$a2V5a2V5a2V5a2V5a2V5a2V5"

// TestUsersAndSessions: users are created once, sessions resolve only
// while unexpired and while their user is enabled with the same role and
// password, and bad input is refused without a change.
func TestUsersAndSessions(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testUsersAndSessions(t, openSQLite(t, filepath.Join(t.TempDir(), "db.sqlite"))) })
	t.Run("postgres", func(t *testing.T) { testUsersAndSessions(t, openPostgres(t, pgtest.Database(t))) })
}

func testUsersAndSessions(t *testing.T, s *store.Store) {
	ctx := context.Background()
	defer s.Close()
	defer s.Close()
	u := store.ConsoleUser{Name: "olivia", Role: store.RoleOperator, PasswordHash: phc, CreatedAt: 100}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUser(ctx, u); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second create: %v, want ErrConflict", err)
	}
	for _, bad := range []store.ConsoleUser{
		{Name: "", Role: "viewer", PasswordHash: phc},
		{Name: "a/b", Role: "viewer", PasswordHash: phc},
		{Name: "x", Role: "root", PasswordHash: phc},
		{Name: "x", Role: "viewer", PasswordHash: "plaintext"},
	} {
		if err := s.CreateUser(ctx, bad); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("create %+v: %v, want ErrInvalid", bad, err)
		}
	}
	if us, err := s.ListUsers(ctx); err != nil || len(us) != 1 || us[0] != u {
		t.Fatalf("list: %+v %v", us, err)
	}

	secret := sha256.Sum256([]byte("cookie secret"))
	sess := store.Session{SecretHash: secret[:], User: "olivia", CSRF: "0123456789abcdef0123", CreatedAt: 200, ExpiresAt: 300}
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, store.Session{SecretHash: secret[:1], User: "olivia", CSRF: sess.CSRF, CreatedAt: 1, ExpiresAt: 2}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("short hash: %v", err)
	}
	if err := s.CreateSession(ctx, store.Session{SecretHash: bytes.Repeat([]byte{1}, 32), User: "nobody", CSRF: sess.CSRF, CreatedAt: 1, ExpiresAt: 2}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of an unknown user: %v, want ErrNotFound", err)
	}
	got, gu, err := s.SessionByHash(ctx, secret[:], 299)
	if err != nil || got.User != "olivia" || got.CSRF != sess.CSRF || gu.Role != store.RoleOperator || gu.LastLoginAt != 200 {
		t.Fatalf("session: %+v %+v %v", got, gu, err)
	}
	if _, _, err := s.SessionByHash(ctx, secret[:], 300); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired session: %v, want ErrNotFound", err)
	}
	if n, err := s.DeleteExpiredSessions(ctx, 300); err != nil || n != 1 {
		t.Errorf("delete expired: %d %v", n, err)
	}

	// A role change ends the user's sessions.
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateUser(ctx, "olivia", store.RoleViewer, ""); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionByHash(ctx, secret[:], 250); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after a role change: %v", err)
	}
	if err := s.UpdateUser(ctx, "nobody", store.RoleViewer, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update unknown: %v", err)
	}
	if err := s.UpdateUser(ctx, "olivia", "root", ""); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("update to a bad role: %v", err)
	}
	// Disabling ends sessions and forbids new ones; the row stays.
	if err := s.CreateSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableUser(ctx, "olivia", 260); err != nil {
		t.Fatal(err)
	}
	if err := s.DisableUser(ctx, "olivia", 270); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.SessionByHash(ctx, secret[:], 261); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session after disable: %v", err)
	}
	if err := s.CreateSession(ctx, sess); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session of a disabled user: %v, want ErrNotFound", err)
	}
	if gu, err := s.User(ctx, "olivia"); err != nil || gu.DisabledAt != 260 || gu.Role != store.RoleViewer {
		t.Errorf("disabled user: %+v %v", gu, err)
	}
	if err := s.DisableUser(ctx, "nobody", 1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("disable unknown: %v", err)
	}
}
