package diag

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/logring"
)

// Group is the group allowed to use the diag socket besides root.
const Group = "flotilla"

// Agent is what the server asks of the running agent; *agent.Agent is one.
type Agent interface {
	Status() agent.Status
	Internals() agent.Internals
	Rollback(ctx context.Context, name, reason string) (lifecycle.State, error)
	Resync(ctx context.Context) error
}

// Config sets up a Server.
type Config struct {
	Agent  Agent
	Logs   *logring.Ring // the agent's recent log records; nil = none
	Logger *slog.Logger  // nil = discard
	// RequestTimeout bounds one request's work (default 60 s: a golden
	// check may load nothing but still runs a model).
	RequestTimeout time.Duration
	// ConfigPath is the agent's configuration file, put (redacted) into
	// support bundles built for the control plane; "" = none.
	ConfigPath string
}

// Server answers diag requests for one agent.
type Server struct {
	cfg Config
}

// NewServer returns a server for cfg.Agent.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 60 * time.Second
	}
	return &Server{cfg: cfg}
}

// Listen opens the diag socket at path: mode 0660 and group flotilla when
// that group exists, else 0600. The socket is made under a temporary name
// and renamed into place once its mode is set, so it is never reachable
// with looser permissions; a stale socket at path is replaced, any other
// file there is an error.
func Listen(path string) (net.Listener, error) {
	gid := -1
	if g, err := user.LookupGroup(Group); err == nil {
		if n, err := strconv.Atoi(g.Gid); err == nil {
			gid = n
		}
	}
	return listen(path, gid)
}

func listen(path string, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket == 0 {
		return nil, fmt.Errorf("diag: %s exists and is not a socket", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("diag: %w", err)
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".diag-%d.sock", os.Getpid()))
	os.Remove(tmp)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("diag: %w", err)
	}
	l.SetUnlinkOnClose(false)
	fail := func(err error) (net.Listener, error) {
		l.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("diag: %w", err)
	}
	mode := os.FileMode(0o600)
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(err)
		}
		mode = 0o660
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return &unlinking{UnixListener: l, path: path}, nil
}

// unlinking removes the socket (under its final name) when closed.
type unlinking struct {
	*net.UnixListener
	path string
	once sync.Once
}

func (u *unlinking) Close() error {
	err := u.UnixListener.Close()
	u.once.Do(func() { os.Remove(u.path) })
	return err
}

// Serve answers connections on l until ctx is done, then closes l and
// waits for the requests in flight.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("diag: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReaderSize(io.LimitReader(c, MaxRequest+1), 4096).ReadSlice('\n')
	var resp Response
	switch {
	case errors.Is(err, bufio.ErrBufferFull) || len(line) > MaxRequest:
		resp = errResponse(fmt.Errorf("request over %d bytes", MaxRequest))
	case err != nil && len(line) == 0:
		return // the client went away
	default:
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			resp = errResponse(fmt.Errorf("request is not JSON: %w", err))
		} else {
			rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
			resp = s.Handle(rctx, req)
			cancel()
		}
	}
	c.SetWriteDeadline(time.Now().Add(30 * time.Second))
	b, _ := json.Marshal(resp)
	c.Write(append(b, '\n'))
}

func errResponse(err error) Response {
	return Response{V: ProtocolVersion, Error: err.Error()}
}

// Handle answers one request.
func (s *Server) Handle(ctx context.Context, req Request) Response {
	if req.V != ProtocolVersion {
		return errResponse(fmt.Errorf("protocol version %d not served (this agent speaks %d)", req.V, ProtocolVersion))
	}
	data, err := s.handle(ctx, req)
	if err != nil {
		s.cfg.Logger.Info("diag request failed", "cmd", req.Cmd, "err", err)
		return errResponse(err)
	}
	b, err := json.Marshal(data)
	if err != nil {
		return errResponse(err)
	}
	return Response{V: ProtocolVersion, OK: true, Data: b}
}

func (s *Server) handle(ctx context.Context, req Request) (any, error) {
	a := s.cfg.Agent
	switch req.Cmd {
	case CmdStatus:
		return liveStatus(ctx, a, s.cfg.Logs), nil
	case CmdModels:
		return liveStatus(ctx, a, nil).Models, nil
	case CmdTestInfer:
		return s.testInfer(ctx, req.Model)
	case CmdLogs:
		return s.logs(req)
	case CmdResync:
		s.cfg.Logger.Info("resync requested on the diag socket")
		if err := a.Resync(ctx); err != nil {
			return nil, err
		}
		return map[string]bool{"resynced": true}, nil
	case CmdRollback:
		if req.Model == "" {
			return nil, errors.New("rollback: name a model")
		}
		reason := "rolled back on site with flotilla-agent diag"
		if req.Reason != "" {
			reason += ": " + clip(req.Reason, 200)
		}
		s.cfg.Logger.Warn("rollback requested on the diag socket", "model", req.Model)
		st, err := a.Rollback(ctx, req.Model, reason)
		if err != nil {
			return nil, err
		}
		return RollbackReport{Model: st.Name, ActiveRelease: st.ActiveRelease, Rollbacks: st.Rollbacks, Reported: a.Internals().Connected}, nil
	}
	return nil, fmt.Errorf("unknown command %q", clip(req.Cmd, 64))
}

func (s *Server) testInfer(ctx context.Context, model string) (any, error) {
	if model == "" {
		return nil, errors.New("test-infer: name a model")
	}
	l := s.cfg.Agent.Internals().Lifecycle
	if l == nil {
		return nil, fmt.Errorf("%w: no models are running", agent.ErrNotRunning)
	}
	start := time.Now()
	g, err := l.CheckGolden(ctx, model)
	if err != nil {
		return nil, err
	}
	r := TestInferReport{Model: model, Release: g.Release, Version: g.Version, Runtime: g.Runtime, HasGolden: g.HasGolden,
		Passed: g.HasGolden && g.Err == nil, Millis: millis(time.Since(start))}
	if g.Err != nil {
		r.Error = g.Err.Error()
	}
	return r, nil
}

// maxLogEntries caps one logs answer.
const maxLogEntries = 5000

func (s *Server) logs(req Request) (any, error) {
	if s.cfg.Logs == nil {
		return LogsReport{Entries: []logring.Entry{}}, nil
	}
	lvl, err := logring.ParseLevel(req.Level)
	if err != nil {
		return nil, fmt.Errorf("logs: level: %w", err)
	}
	limit := req.Limit
	if limit <= 0 || limit > maxLogEntries {
		limit = maxLogEntries
	}
	es, total := s.cfg.Logs.Entries(logring.Filter{MinLevel: lvl, Contains: req.Contains, Limit: limit})
	if es == nil {
		es = []logring.Entry{}
	}
	return LogsReport{Entries: es, Kept: total}, nil
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
