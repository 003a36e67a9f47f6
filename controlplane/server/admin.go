package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// AdminTokenFile holds the admin token made on first start (mode 0600).
const AdminTokenFile = "admin-token"

// ensureAdminToken makes an admin API token when the store has none, so a
// fresh server can be used at once: it is written to the data folder and
// shown once in the log.
func (s *Server) ensureAdminToken(ctx context.Context) error {
	toks, err := s.store.ListAPITokens(ctx)
	if err != nil {
		return err
	}
	if len(toks) > 0 {
		return nil
	}
	secret, hash := api.NewSecret(api.APITokenPrefix)
	now := s.cfg.Now().UnixMilli()
	t := store.APIToken{ID: "admin-initial", Name: "initial admin", Role: "admin", Hash: hash, CreatedAt: now}
	if err := s.store.CreateAPIToken(ctx, t); err != nil {
		return fmt.Errorf("create initial admin token: %w", err)
	}
	path := filepath.Join(s.cfg.DataDir, AdminTokenFile)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, _ = s.store.AppendAudit(ctx, store.AuditEntry{At: now, Actor: "server", Action: "api-token.create", Target: t.ID, Detail: "initial admin token"})
	s.adminToken = secret
	s.log.Info("created the initial admin API token", "file", path)
	return nil
}
