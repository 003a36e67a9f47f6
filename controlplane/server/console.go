package server

import (
	"net/http"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/console"
)

// ConsoleConfig tunes the operator console served beside the API.
type ConsoleConfig struct {
	// Disabled serves the API alone.
	Disabled bool
	// SessionTTL is how long a console login lasts; 0: 12h.
	SessionTTL time.Duration
	// LivePoll is how often live parts of pages refresh; 0: 2s.
	LivePoll time.Duration
}

// sessionSweep is how often expired console sessions are deleted.
const sessionSweep = time.Hour

// httpHandler is what the API port serves: the REST API under /v1/ and
// /healthz, the operator console everywhere else.
func (s *Server) httpHandler() (http.Handler, error) {
	if s.cfg.Console.Disabled {
		return s.api, nil
	}
	con, err := console.New(console.Config{Store: s.store, API: s.api, Logger: s.log.With("component", "console"),
		Now: s.cfg.Now, SessionTTL: s.cfg.Console.SessionTTL, LivePoll: s.cfg.Console.LivePoll})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/", s.api)
	mux.Handle("/healthz", s.api)
	mux.Handle("/", con)
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		t := time.NewTicker(sessionSweep)
		defer t.Stop()
		for {
			select {
			case <-s.life.Done():
				return
			case <-t.C:
				if n, err := s.store.DeleteExpiredSessions(s.life, s.cfg.Now().UnixMilli()); err != nil {
					s.log.Warn("expired console sessions not deleted", "err", err)
				} else if n > 0 {
					s.log.Debug("expired console sessions deleted", "sessions", n)
				}
			}
		}
	}()
	return mux, nil
}
