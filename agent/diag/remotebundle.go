package diag

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"log/slog"

	"github.com/flotilla-edge/flotilla/agent/logring"
)

// SupportBundle builds a signed support bundle of the running agent for
// the control plane (agent.SupportBundler): the same archive as
// `flotilla-agent diag support-bundle`, returned as the bundle's bytes
// and its detached signature (Signature JSON). max caps the bundle; a
// bigger one is an error, never a truncated bundle.
func (s *Server) SupportBundle(ctx context.Context, max int64) (bundle, sig []byte, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	in := BundleInput{Status: liveStatus(ctx, s.cfg.Agent, s.cfg.Logs), Now: time.Now()}
	if s.cfg.Logs != nil {
		in.Logs, _ = s.cfg.Logs.Entries(logring.Filter{MinLevel: slog.LevelDebug, Limit: maxLogEntries})
	}
	internals := s.cfg.Agent.Internals()
	if db := internals.DB; db != nil {
		if evs, err := db.Recent(ctx, 1000); err != nil {
			in.Status.Problems = append(in.Status.Problems, "journal: "+err.Error())
		} else {
			in.Journal = evs
		}
	}
	if s.cfg.ConfigPath != "" {
		if b, err := os.ReadFile(s.cfg.ConfigPath); err != nil {
			in.Status.Problems = append(in.Status.Problems, "config: "+err.Error())
		} else {
			in.Config = b
		}
	}
	if internals.DataDir == "" {
		return nil, nil, errors.New("support bundle: the agent has no data folder yet")
	}
	key, cert, err := DeviceCredentials(ctx, internals.DataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("support bundle: cannot sign it: %w", err)
	}
	var buf bytes.Buffer
	man, err := WriteBundle(&buf, in)
	if err != nil {
		return nil, nil, err
	}
	if max > 0 && int64(buf.Len()) > max {
		return nil, nil, fmt.Errorf("support bundle is %d bytes, over the control plane's limit of %d", buf.Len(), max)
	}
	sb, err := json.Marshal(Sign(buf.Bytes(), key, man.DeviceID, cert))
	if err != nil {
		return nil, nil, err
	}
	s.cfg.Logger.Info("support bundle built for the control plane", "bytes", buf.Len(), "files", len(man.Files))
	return buf.Bytes(), sb, nil
}
