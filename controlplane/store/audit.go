package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// AuditEntry records an operator action or a scheduler decision. IDs are
// assigned by the store and increase with every append.
type AuditEntry struct {
	ID     int64
	At     int64 // milliseconds since the epoch
	Actor  string
	Action string
	Target string
	Detail string
}

// DefaultAuditLimit is how many entries ListAudit returns when not told.
const DefaultAuditLimit = 100

// AppendAudit adds e to the audit log and returns its ID; e.ID is ignored.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) (int64, error) {
	if err := validateAudit(e); err != nil {
		return 0, fmt.Errorf("append audit: %w", err)
	}
	var id int64
	err := s.wdb.QueryRowContext(ctx, s.q(`INSERT INTO audit_log (at, actor, action, target, detail)
		VALUES (?, ?, ?, ?, ?) RETURNING id`), e.At, e.Actor, e.Action, e.Target, e.Detail).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append audit: %w", err)
	}
	return id, nil
}

func validateAudit(e AuditEntry) error {
	if e.Action == "" {
		return fmt.Errorf("%w audit entry: empty action", ErrInvalid)
	}
	if len(e.Actor)+len(e.Action)+len(e.Target)+len(e.Detail) > maxAuditTextBytes {
		return fmt.Errorf("%w audit entry: over %d bytes", ErrInvalid, maxAuditTextBytes)
	}
	return nil
}

// appendAuditTx appends validated entries within a transaction.
func (s *Store) appendAuditTx(ctx context.Context, tx *sql.Tx, es []AuditEntry) error {
	if len(es) == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, s.q(`INSERT INTO audit_log (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)`))
	if err != nil {
		return fmt.Errorf("append audit: %w", err)
	}
	defer stmt.Close()
	for _, e := range es {
		if err := validateAudit(e); err != nil {
			return fmt.Errorf("append audit: %w", err)
		}
		if _, err := stmt.ExecContext(ctx, e.At, e.Actor, e.Action, e.Target, e.Detail); err != nil {
			return fmt.Errorf("append audit: %w", err)
		}
	}
	return nil
}

// ListAuditFor is ListAudit of the entries whose target is target (a
// rollout's trail: "rollout/ID").
func (s *Store) ListAuditFor(ctx context.Context, target string, limit int, before int64) ([]AuditEntry, error) {
	if target == "" {
		return nil, fmt.Errorf("list audit: %w: empty target", ErrInvalid)
	}
	return s.listAudit(ctx, target, limit, before)
}

// ListAudit returns up to limit audit entries (DefaultAuditLimit when limit
// ≤ 0), newest first, in the order they were appended. before, when not 0,
// returns only entries with a smaller ID: pass the last ID of a page to get
// the next, older, one.
func (s *Store) ListAudit(ctx context.Context, limit int, before int64) ([]AuditEntry, error) {
	return s.listAudit(ctx, "", limit, before)
}

func (s *Store) listAudit(ctx context.Context, target string, limit int, before int64) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	query, args := `SELECT id, at, actor, action, target, detail FROM audit_log`, []any{}
	var where []string
	if target != "" {
		where, args = append(where, `target = ?`), append(args, target)
	}
	if before != 0 {
		where, args = append(where, `id < ?`), append(args, before)
	}
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, ` AND `)
	}
	query += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		if err := rows.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("list audit: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list audit: %w", err)
	}
	return out, nil
}
