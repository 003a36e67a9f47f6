package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
)

// EnrolToken is a bootstrap token that devices present to enrol. Only the
// sha256 of its secret is stored. Times are milliseconds since the epoch.
type EnrolToken struct {
	ID        string
	Hash      []byte // sha256 of the secret token
	Name      string
	MaxUses   int // 0: unlimited
	Uses      int
	ExpiresAt int64 // 0: never
	// Labels are given to every device enrolled with the token, under the
	// device's own labels.
	Labels    map[string]string
	CreatedAt int64
	RevokedAt int64 // 0: not revoked
}

const enrolTokenCols = `id, hash, name, max_uses, uses, expires_at, labels, created_at, revoked_at`

func scanEnrolToken(r rowScanner) (EnrolToken, error) {
	var (
		t      EnrolToken
		labels string
	)
	err := r.Scan(&t.ID, &t.Hash, &t.Name, &t.MaxUses, &t.Uses, &t.ExpiresAt, &labels, &t.CreatedAt, &t.RevokedAt)
	if err != nil {
		return EnrolToken{}, err
	}
	if t.Labels, err = decodeLabels(labels); err != nil {
		return EnrolToken{}, fmt.Errorf("enrol token %q: %w", t.ID, err)
	}
	return t, nil
}

// CreateEnrolToken stores a new enrol token, unused and unrevoked whatever
// t.Uses and t.RevokedAt say. A duplicate ID or hash gives ErrConflict.
func (s *Store) CreateEnrolToken(ctx context.Context, t EnrolToken) error {
	if err := validateToken(t.ID, t.Hash); err != nil {
		return fmt.Errorf("create enrol token: %w", err)
	}
	if t.MaxUses < 0 {
		return fmt.Errorf("create enrol token %q: %w max uses %d", t.ID, ErrInvalid, t.MaxUses)
	}
	if err := ValidateLabels(t.Labels); err != nil {
		return fmt.Errorf("create enrol token %q: %w", t.ID, err)
	}
	labels, err := encodeLabels(t.Labels)
	if err != nil {
		return fmt.Errorf("create enrol token %q: %w", t.ID, err)
	}
	_, err = s.wdb.ExecContext(ctx, s.q(`INSERT INTO enrol_tokens (`+enrolTokenCols+`)
		VALUES (?, ?, ?, ?, 0, ?, ?, ?, 0)`),
		t.ID, t.Hash, t.Name, t.MaxUses, t.ExpiresAt, labels, t.CreatedAt)
	if s.d.uniqueViolation(err) {
		return fmt.Errorf("create enrol token %q: %w", t.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create enrol token %q: %w", t.ID, err)
	}
	return nil
}

// ListEnrolTokens returns every enrol token, revoked and expired ones
// included, oldest first.
func (s *Store) ListEnrolTokens(ctx context.Context) ([]EnrolToken, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+enrolTokenCols+` FROM enrol_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list enrol tokens: %w", err)
	}
	defer rows.Close()
	var out []EnrolToken
	for rows.Next() {
		t, err := scanEnrolToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list enrol tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list enrol tokens: %w", err)
	}
	return out, nil
}

// RevokeEnrolToken revokes an enrol token as of at. Revoking a revoked token
// keeps the first time and is no error; an unknown ID gives ErrNotFound.
func (s *Store) RevokeEnrolToken(ctx context.Context, id string, at int64) error {
	if err := s.revoke(ctx, "enrol_tokens", id, at); err != nil {
		return fmt.Errorf("revoke enrol token %q: %w", id, err)
	}
	return nil
}

// API token roles, from least to most privileged.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// APIToken is a bearer token for the REST API and console. Only the sha256
// of its secret is stored. Times are milliseconds since the epoch.
type APIToken struct {
	ID         string
	Name       string
	Role       string // RoleViewer, RoleOperator or RoleAdmin
	Hash       []byte // sha256 of the secret token
	CreatedAt  int64
	ExpiresAt  int64 // 0: never
	RevokedAt  int64 // 0: not revoked
	LastUsedAt int64
}

// Active reports whether the token may be used at time now.
func (t APIToken) Active(now int64) bool {
	return t.RevokedAt == 0 && (t.ExpiresAt == 0 || now < t.ExpiresAt)
}

const apiTokenCols = `id, name, role, hash, created_at, expires_at, revoked_at, last_used_at`

func scanAPIToken(r rowScanner) (APIToken, error) {
	var t APIToken
	err := r.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &t.CreatedAt, &t.ExpiresAt, &t.RevokedAt, &t.LastUsedAt)
	return t, err
}

// CreateAPIToken stores a new API token, unrevoked and unused whatever
// t.RevokedAt and t.LastUsedAt say. A duplicate ID or hash gives ErrConflict.
func (s *Store) CreateAPIToken(ctx context.Context, t APIToken) error {
	if err := validateToken(t.ID, t.Hash); err != nil {
		return fmt.Errorf("create api token: %w", err)
	}
	switch t.Role {
	case RoleViewer, RoleOperator, RoleAdmin:
	default:
		return fmt.Errorf("create api token %q: %w role %q", t.ID, ErrInvalid, t.Role)
	}
	_, err := s.wdb.ExecContext(ctx, s.q(`INSERT INTO api_tokens (`+apiTokenCols+`)
		VALUES (?, ?, ?, ?, ?, ?, 0, 0)`),
		t.ID, t.Name, t.Role, t.Hash, t.CreatedAt, t.ExpiresAt)
	if s.d.uniqueViolation(err) {
		return fmt.Errorf("create api token %q: %w", t.ID, ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("create api token %q: %w", t.ID, err)
	}
	return nil
}

// APITokenByHash returns the API token whose secret hashes to hash, revoked
// and expired ones included: the caller checks Active. An unknown hash gives
// ErrNotFound.
func (s *Store) APITokenByHash(ctx context.Context, hash []byte) (APIToken, error) {
	t, err := scanAPIToken(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+apiTokenCols+` FROM api_tokens WHERE hash = ?`), hash))
	if errors.Is(err, sql.ErrNoRows) {
		return APIToken{}, fmt.Errorf("api token: %w", ErrNotFound)
	}
	if err != nil {
		return APIToken{}, fmt.Errorf("api token: %w", err)
	}
	return t, nil
}

// ListAPITokens returns every API token, revoked and expired ones included,
// oldest first.
func (s *Store) ListAPITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+apiTokenCols+` FROM api_tokens ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		t, err := scanAPIToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list api tokens: %w", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list api tokens: %w", err)
	}
	return out, nil
}

// RevokeAPIToken revokes an API token as of at. Revoking a revoked token
// keeps the first time and is no error; an unknown ID gives ErrNotFound.
func (s *Store) RevokeAPIToken(ctx context.Context, id string, at int64) error {
	if err := s.revoke(ctx, "api_tokens", id, at); err != nil {
		return fmt.Errorf("revoke api token %q: %w", id, err)
	}
	return nil
}

// TouchAPIToken sets LastUsedAt = max(LastUsedAt, at). An unknown ID gives
// ErrNotFound.
func (s *Store) TouchAPIToken(ctx context.Context, id string, at int64) error {
	res, err := s.wdb.ExecContext(ctx,
		s.q(`UPDATE api_tokens SET last_used_at = ? WHERE id = ? AND last_used_at < ?`), at, id, at)
	if err == nil {
		err = s.checkUpdated(ctx, res, "api_tokens", id)
	}
	if err != nil {
		return fmt.Errorf("touch api token %q: %w", id, err)
	}
	return nil
}

// revoke sets revoked_at on a row of table unless it is already set.
func (s *Store) revoke(ctx context.Context, table, id string, at int64) error {
	if at <= 0 {
		return fmt.Errorf("%w revocation time %d", ErrInvalid, at)
	}
	res, err := s.wdb.ExecContext(ctx,
		s.q(`UPDATE `+table+` SET revoked_at = ? WHERE id = ? AND revoked_at = 0`), at, id)
	if err != nil {
		return err
	}
	return s.checkUpdated(ctx, res, table, id)
}

// checkUpdated returns ErrNotFound when an UPDATE of table by id touched no
// row because there is no such row, and nil when the row exists.
func (s *Store) checkUpdated(ctx context.Context, res sql.Result, table, id string) error {
	if n, err := res.RowsAffected(); err != nil || n > 0 {
		return err
	}
	var one int
	err := s.wdb.QueryRowContext(ctx, s.q(`SELECT 1 FROM `+table+` WHERE id = ?`), id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

func validateToken(id string, hash []byte) error {
	if !validName(id, maxTokenIDLen) {
		return fmt.Errorf("%w token id %q: must be 1 to %d letters, digits or . _ -", ErrInvalid, id, maxTokenIDLen)
	}
	if len(hash) != sha256.Size {
		return fmt.Errorf("%w token hash: %d bytes, want %d", ErrInvalid, len(hash), sha256.Size)
	}
	return nil
}
