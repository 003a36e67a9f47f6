package inferapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	goruntime "runtime"
	"strconv"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Models is what the API serves; *lifecycle.Lifecycle is one.
type Models interface {
	Names() []string
	Active(name string) (lifecycle.Served, bool)
	Infer(ctx context.Context, name string, inputs []runtime.Tensor) (lifecycle.Result, error)
}

// Config sets up a Server.
type Config struct {
	Models Models
	// Version is the agent's version, in the server metadata.
	Version string
	// MaxBodyBytes caps a request body (default 64 MiB): larger ones are
	// refused with 413 before they are read whole.
	MaxBodyBytes int64
	// Concurrency is the calls in flight per model (default GOMAXPROCS).
	Concurrency int
	// MaxQueue is the calls waiting per model beyond Concurrency (default
	// 64); one more is refused at once with 429.
	MaxQueue int
	// QueueTimeout is how long a call waits for its turn (default 2 s),
	// then 503.
	QueueTimeout time.Duration
	// Limits bound the tensors of one request.
	Limits Limits
	// SharedMemory bounds the system shared memory regions registered.
	SharedMemory ShmLimits
	Logger       *slog.Logger // nil = discard
}

func (c Config) withDefaults() Config {
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 20
	}
	if c.Concurrency <= 0 {
		c.Concurrency = goruntime.GOMAXPROCS(0)
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 64
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = 2 * time.Second
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c.Limits = c.Limits.withDefaults()
	return c
}

// Server is the local inference API. Its Handler serves any listener;
// Serve runs it on loopback TCP and a unix socket.
type Server struct {
	cfg Config
	mux *http.ServeMux

	shm *shmRegistry

	mu       sync.Mutex
	limiters map[string]*limiter
}

// New returns a server over cfg.Models.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg.withDefaults(), mux: http.NewServeMux(), limiters: map[string]*limiter{}}
	s.shm = newShmRegistry(s.cfg.SharedMemory)
	s.mux.HandleFunc("GET /v2", s.serverMetadata)
	s.mux.HandleFunc("GET /v2/health/live", s.live)
	s.mux.HandleFunc("GET /v2/health/ready", s.ready)
	s.mux.HandleFunc("GET /v2/models/{name}", s.modelMetadata)
	s.mux.HandleFunc("GET /v2/models/{name}/versions/{version}", s.modelMetadata)
	s.mux.HandleFunc("GET /v2/models/{name}/ready", s.modelReady)
	s.mux.HandleFunc("GET /v2/models/{name}/versions/{version}/ready", s.modelReady)
	s.mux.HandleFunc("POST /v2/models/{name}/infer", s.infer)
	s.mux.HandleFunc("POST /v2/models/{name}/versions/{version}/infer", s.infer)
	s.mux.HandleFunc("GET /v2/systemsharedmemory/status", s.shmStatus)
	s.mux.HandleFunc("GET /v2/systemsharedmemory/region/{name}/status", s.shmStatus)
	s.mux.HandleFunc("POST /v2/systemsharedmemory/region/{name}/register", s.shmRegister)
	s.mux.HandleFunc("POST /v2/systemsharedmemory/unregister", s.shmUnregister)
	s.mux.HandleFunc("POST /v2/systemsharedmemory/region/{name}/unregister", s.shmUnregister)
	return s
}

// Handler is the API's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve serves on every listener until ctx ends, then shuts down,
// letting calls in flight finish for up to 5 s, and unregisters every
// shared memory region.
func (s *Server) Serve(ctx context.Context, ls ...net.Listener) error {
	defer s.shm.closeAll()
	srv := &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute, ConnContext: peerUID}
	errs := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errs <- srv.Serve(l) }()
	}
	select {
	case <-ctx.Done():
	case err := <-errs:
		if !errors.Is(err, http.ErrServerClosed) {
			srv.Close()
			return err
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// ListenUnix listens on a unix socket at path, replacing a stale one,
// readable and writable by the owner and group only.
func ListenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("inferapi: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("inferapi: %w", err)
	}
	return l, nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	w.Write(b)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

func (s *Server) serverMetadata(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"name": "flotilla-agent", "version": s.cfg.Version,
		"extensions": []string{"binary_tensor_data", "system_shared_memory"}})
}

func (s *Server) live(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]bool{"live": true})
}

// ready: every model the device knows serves a release.
func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	for _, n := range s.cfg.Models.Names() {
		if _, ok := s.cfg.Models.Active(n); !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "not_ready": n})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ready": true})
}

// served finds the model the path names; a version must be the active
// release (or its version string). It writes the error itself.
func (s *Server) served(w http.ResponseWriter, r *http.Request) (lifecycle.Served, bool) {
	name := r.PathValue("name")
	sv, ok := s.cfg.Models.Active(name)
	if !ok {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q is not served", name))
		return sv, false
	}
	if v := r.PathValue("version"); v != "" && v != sv.VersionLabel() && v != sv.Version {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %q version %q is not served (version %s is)", name, v, sv.VersionLabel()))
		return sv, false
	}
	return sv, true
}

type tensorMeta struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

func metas(ts []runtime.TensorInfo) []tensorMeta {
	out := make([]tensorMeta, len(ts))
	for i, t := range ts {
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		out[i] = tensorMeta{Name: t.Name, Datatype: dtypeName(t.DType), Shape: shape}
	}
	return out
}

func (s *Server) modelMetadata(w http.ResponseWriter, r *http.Request) {
	sv, ok := s.served(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": sv.Name, "versions": []string{sv.VersionLabel()},
		"platform": sv.Runtime, "inputs": metas(sv.Inputs), "outputs": metas(sv.Outputs)})
}

func (s *Server) modelReady(w http.ResponseWriter, r *http.Request) {
	if sv, ok := s.served(w, r); ok {
		writeJSON(w, http.StatusOK, map[string]any{"name": sv.Name, "ready": true})
	}
}

// headerLength is the binary tensor extension's header (canonical form).
const headerLength = "Inference-Header-Content-Length"

// Content types, shared by every response (net/http does not modify them).
var (
	applicationJSON = []string{"application/json"}
	octetStream     = []string{"application/octet-stream"}
)

func (s *Server) infer(w http.ResponseWriter, r *http.Request) {
	sv, ok := s.served(w, r)
	if !ok {
		return
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body of %d bytes, at most %d", r.ContentLength, s.cfg.MaxBodyBytes))
		return
	}
	body, err := readBody(r, s.cfg.MaxBodyBytes)
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.MaxBodyBytes))
			return
		}
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	header, bin := body, []byte(nil)
	if hl := r.Header.Get(headerLength); hl != "" {
		n, err := strconv.Atoi(hl)
		if err != nil || n < 0 || n > len(body) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("%s %q does not fit a body of %d bytes", headerLength, hl, len(body)))
			return
		}
		header, bin = body[:n], body[n:]
	}
	d, err := decodeRequest(header, bin, sv.Inputs, sv.Outputs, s.cfg.Limits)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	defer recycle(d) // after the answer: the inputs are not used past it
	if err := s.shm.resolveShm(d); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	lim := s.limiter(sv.Name)
	if err := lim.acquire(r.Context(), s.cfg.QueueTimeout); err != nil {
		w.Header().Set("Retry-After", "1")
		switch {
		case errors.Is(err, errQueueFull):
			writeError(w, http.StatusTooManyRequests, fmt.Sprintf("model %q: %v", sv.Name, err))
		default:
			writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("model %q: %v", sv.Name, err))
		}
		return
	}
	res, err := s.cfg.Models.Infer(r.Context(), sv.Name, d.inputs)
	lim.release()
	if err != nil {
		s.inferError(w, sv.Name, err)
		return
	}
	if err := s.shm.writeOutputs(d, res.Outputs); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	hdr, out, err := encodeResponse(sv.Name, strconv.FormatUint(res.Release, 10), d, res.Outputs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, err.Error())
		return
	}
	h := w.Header() // canonical keys set directly: no canonicalising per call
	if out != nil {
		h["Content-Type"] = octetStream
		h[headerLength] = []string{strconv.Itoa(len(hdr))}
	} else {
		h["Content-Type"] = applicationJSON
	}
	h["Content-Length"] = []string{strconv.Itoa(len(hdr) + len(out))}
	w.Write(hdr)
	w.Write(out)
}

func (s *Server) inferError(w http.ResponseWriter, name string, err error) {
	switch {
	case errors.Is(err, runtime.ErrInvalidInput):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, lifecycle.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, runtime.ErrUnavailable):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusGatewayTimeout, err.Error())
	case errors.Is(err, context.Canceled):
		writeError(w, 499, err.Error()) // the client went away
	default:
		s.cfg.Logger.Warn("inference failed", "model", name, "error", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// readBody reads at most limit bytes; a longer body fails with
// *http.MaxBytesError without being read whole. With a Content-Length
// (net/http holds the body to it) the body is read into one buffer of
// that size.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	rd := http.MaxBytesReader(nil, r.Body, limit)
	if n := r.ContentLength; n >= 0 && n <= limit {
		b := make([]byte, n)
		if _, err := io.ReadFull(rd, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	var buf bytes.Buffer
	_, err := buf.ReadFrom(rd)
	return buf.Bytes(), err
}

func (s *Server) limiter(name string) *limiter {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.limiters[name]
	if !ok {
		l = &limiter{slots: make(chan struct{}, s.cfg.Concurrency), maxQueue: int64(s.cfg.MaxQueue)}
		s.limiters[name] = l
	}
	return l
}
