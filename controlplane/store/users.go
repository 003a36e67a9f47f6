package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ConsoleUser is a person who logs in to the operator console. Only a
// password hash is stored (PasswordHash, an argon2id PHC string made by
// package password). Times are milliseconds since the epoch.
type ConsoleUser struct {
	Name         string
	Role         string // RoleViewer, RoleOperator or RoleAdmin
	PasswordHash string
	CreatedAt    int64
	DisabledAt   int64 // 0: may log in
	LastLoginAt  int64
}

// maxUserName caps a console user's name; maxPasswordHash the stored hash.
const (
	maxUserName     = 64
	maxPasswordHash = 512
)

const userCols = `name, role, password_hash, created_at, disabled_at, last_login_at`

func scanUser(r rowScanner) (ConsoleUser, error) {
	var u ConsoleUser
	err := r.Scan(&u.Name, &u.Role, &u.PasswordHash, &u.CreatedAt, &u.DisabledAt, &u.LastLoginAt)
	return u, err
}

func validRole(role string) bool {
	return role == RoleViewer || role == RoleOperator || role == RoleAdmin
}

func validateUser(u ConsoleUser) error {
	switch {
	case !validName(u.Name, maxUserName):
		return fmt.Errorf("%w user name %q: must be 1 to %d letters, digits or . _ -", ErrInvalid, u.Name, maxUserName)
	case !validRole(u.Role):
		return fmt.Errorf("%w user %s: role %q", ErrInvalid, u.Name, u.Role)
	case u.PasswordHash == "" || len(u.PasswordHash) > maxPasswordHash || !strings.HasPrefix(u.PasswordHash, "$"):
		return fmt.Errorf("%w user %s: password hash is not a PHC string", ErrInvalid, u.Name)
	}
	return nil
}

// CreateUser stores a new console user, enabled and never logged in. A
// name taken, even by a disabled user, gives ErrConflict.
func (s *Store) CreateUser(ctx context.Context, u ConsoleUser) error {
	if err := validateUser(u); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO console_users (`+userCols+`) VALUES (?, ?, ?, ?, 0, 0)`),
		u.Name, u.Role, u.PasswordHash, u.CreatedAt)
	if s.d.uniqueViolation(err) {
		return fmt.Errorf("create user %q: %w", u.Name, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create user %q: %w", u.Name, err)
	}
	return nil
}

// User returns a console user, disabled ones included; unknown gives
// ErrNotFound.
func (s *Store) User(ctx context.Context, name string) (ConsoleUser, error) {
	u, err := scanUser(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+userCols+` FROM console_users WHERE name = ?`), name))
	if errors.Is(err, sql.ErrNoRows) {
		return ConsoleUser{}, fmt.Errorf("user %q: %w", name, ErrNotFound)
	}
	if err != nil {
		return ConsoleUser{}, fmt.Errorf("user %q: %w", name, err)
	}
	return u, nil
}

// ListUsers returns every console user, disabled ones included, by name.
func (s *Store) ListUsers(ctx context.Context) ([]ConsoleUser, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+userCols+` FROM console_users ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer rows.Close()
	var out []ConsoleUser
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("list users: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return out, nil
}

// UpdateUser sets a user's role and, when passwordHash is not empty, its
// password; both end every session of the user, who logs in again.
func (s *Store) UpdateUser(ctx context.Context, name, role, passwordHash string) error {
	if !validRole(role) {
		return fmt.Errorf("update user %q: %w role %q", name, ErrInvalid, role)
	}
	if passwordHash != "" && (len(passwordHash) > maxPasswordHash || !strings.HasPrefix(passwordHash, "$")) {
		return fmt.Errorf("update user %q: %w password hash", name, ErrInvalid)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		query, args := `UPDATE console_users SET role = ?`, []any{role}
		if passwordHash != "" {
			query, args = query+`, password_hash = ?`, append(args, passwordHash)
		}
		res, err := tx.ExecContext(ctx, s.q(query+` WHERE name = ?`), append(args, name)...)
		if err != nil {
			return fmt.Errorf("update user %q: %w", name, err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("update user %q: %w", name, errors.Join(err, ErrNotFound))
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE user_name = ?`), name); err != nil {
			return fmt.Errorf("update user %q: %w", name, err)
		}
		return nil
	})
}

// DisableUser stops a user from logging in as of at and ends its sessions.
// Disabling a disabled user keeps the first time; unknown gives
// ErrNotFound.
func (s *Store) DisableUser(ctx context.Context, name string, at int64) error {
	if at <= 0 {
		return fmt.Errorf("disable user %q: %w time %d", name, ErrInvalid, at)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM console_users WHERE name = ?`), name).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("disable user %q: %w", name, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("disable user %q: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE console_users SET disabled_at = ? WHERE name = ? AND disabled_at = 0`), at, name); err != nil {
			return fmt.Errorf("disable user %q: %w", name, err)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE user_name = ?`), name); err != nil {
			return fmt.Errorf("disable user %q: %w", name, err)
		}
		return nil
	})
}

// Session is a console login. Only the SHA-256 of the cookie's secret is
// stored.
type Session struct {
	SecretHash []byte
	User       string
	CSRF       string // the form token of the session
	CreatedAt  int64
	ExpiresAt  int64
}

// CreateSession stores a session of an enabled user and records the login
// time; an unknown or disabled user gives ErrNotFound.
func (s *Store) CreateSession(ctx context.Context, sess Session) error {
	switch {
	case len(sess.SecretHash) != sha256.Size:
		return fmt.Errorf("create session: %w secret hash of %d bytes", ErrInvalid, len(sess.SecretHash))
	case len(sess.CSRF) < 16 || len(sess.CSRF) > 128:
		return fmt.Errorf("create session: %w csrf token", ErrInvalid)
	case sess.ExpiresAt <= sess.CreatedAt:
		return fmt.Errorf("create session: %w: expires before it starts", ErrInvalid)
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE console_users SET last_login_at = ? WHERE name = ? AND disabled_at = 0`),
			sess.CreatedAt, sess.User)
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("create session for %q: %w", sess.User, errors.Join(err, ErrNotFound))
		}
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO console_sessions (secret_hash, user_name, csrf, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?)`), sess.SecretHash, sess.User, sess.CSRF, sess.CreatedAt, sess.ExpiresAt)
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		return nil
	})
}

// SessionByHash returns an unexpired session (as of now) and its user,
// who is enabled; otherwise ErrNotFound.
func (s *Store) SessionByHash(ctx context.Context, hash []byte, now int64) (Session, ConsoleUser, error) {
	var sess Session
	row := s.rdb.QueryRowContext(ctx, s.q(`SELECT s.secret_hash, s.user_name, s.csrf, s.created_at, s.expires_at,
		u.name, u.role, u.password_hash, u.created_at, u.disabled_at, u.last_login_at
		FROM console_sessions s JOIN console_users u ON u.name = s.user_name
		WHERE s.secret_hash = ? AND s.expires_at > ? AND u.disabled_at = 0`), hash, now)
	var u ConsoleUser
	err := row.Scan(&sess.SecretHash, &sess.User, &sess.CSRF, &sess.CreatedAt, &sess.ExpiresAt,
		&u.Name, &u.Role, &u.PasswordHash, &u.CreatedAt, &u.DisabledAt, &u.LastLoginAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, ConsoleUser{}, fmt.Errorf("session: %w", ErrNotFound)
	}
	if err != nil {
		return Session{}, ConsoleUser{}, fmt.Errorf("session: %w", err)
	}
	return sess, u, nil
}

// DeleteSession ends a session; an unknown one is no error.
func (s *Store) DeleteSession(ctx context.Context, hash []byte) error {
	if _, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE secret_hash = ?`), hash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// DeleteExpiredSessions removes the sessions expired by now and returns
// how many.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now int64) (int64, error) {
	res, err := s.wdb.ExecContext(ctx, s.q(`DELETE FROM console_sessions WHERE expires_at <= ?`), now)
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return res.RowsAffected()
}
