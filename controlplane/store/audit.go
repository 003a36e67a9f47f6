package store

import (
	"context"
	"fmt"
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
	if e.Action == "" {
		return 0, fmt.Errorf("append audit: %w entry: empty action", ErrInvalid)
	}
	if len(e.Actor)+len(e.Action)+len(e.Target)+len(e.Detail) > maxAuditTextBytes {
		return 0, fmt.Errorf("append audit: %w entry: over %d bytes", ErrInvalid, maxAuditTextBytes)
	}
	var id int64
	err := s.wdb.QueryRowContext(ctx, s.q(`INSERT INTO audit_log (at, actor, action, target, detail)
		VALUES (?, ?, ?, ?, ?) RETURNING id`), e.At, e.Actor, e.Action, e.Target, e.Detail).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("append audit: %w", err)
	}
	return id, nil
}

// ListAudit returns up to limit audit entries (DefaultAuditLimit when limit
// ≤ 0), newest first, in the order they were appended. before, when not 0,
// returns only entries with a smaller ID: pass the last ID of a page to get
// the next, older, one.
func (s *Store) ListAudit(ctx context.Context, limit int, before int64) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = DefaultAuditLimit
	}
	query, args := `SELECT id, at, actor, action, target, detail FROM audit_log`, []any{}
	if before != 0 {
		query += ` WHERE id < ?`
		args = append(args, before)
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
