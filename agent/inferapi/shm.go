package inferapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/flotilla-edge/flotilla/runtime"
)

// Triton's system shared memory extension: a client puts tensors in a
// POSIX shared memory object (shm_open, so a file under /dev/shm),
// registers it under a name, and then names it in an inference request
// instead of sending the bytes:
//
//	POST /v2/systemsharedmemory/region/{name}/register {"key":"/k","offset":0,"byte_size":N}
//	GET  /v2/systemsharedmemory[/region/{name}]/status
//	POST /v2/systemsharedmemory[/region/{name}]/unregister
//
// with an input's "parameters": {"shared_memory_region": name,
// "shared_memory_byte_size": n, "shared_memory_offset": off}.
//
// Trust: the API listens on loopback and on a 0660 unix socket, so who may
// register is a process on the device. The agent opens the key itself,
// read-only, without following links, and accepts only a regular file
// owned by its own uid or — on the unix socket — by the caller's uid
// (SO_PEERCRED): a caller cannot have the agent read another user's
// object it could not read itself. Keys are one name (no '/' after the
// leading one, no "..").
//
// The registered range is mapped read-only. The client may shrink the
// object afterwards, and touching a mapped page past the end of the file
// raises SIGBUS; so each request checks the file's size, and the bytes are
// copied out of the mapping by code that turns a fault into an error
// (debug.SetPanicOnFault) — for the race between the check and the copy.
// That copy is the only one on our side; the runtime's channel copies once
// more into its sealed buffer.

// shmDir is where POSIX shared memory objects live on Linux.
const shmDir = "/dev/shm"

// ShmLimits bound the shared memory the API holds mapped.
type ShmLimits struct {
	MaxRegions int   // registered regions (default 16)
	MaxBytes   int64 // registered bytes, all regions together (default 1 GiB)
}

func (l ShmLimits) withDefaults() ShmLimits {
	if l.MaxRegions <= 0 {
		l.MaxRegions = 16
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = 1 << 30
	}
	return l
}

// shmRegion is one registered range of a shared memory object.
type shmRegion struct {
	name, key    string
	offset, size int64
	file         *os.File
	mapping      []byte // page-aligned, as mmap returned it
	data         []byte // the registered range within mapping
	refs         int    // requests reading it; under shmRegistry.mu
	gone         bool   // unregistered: unmap when refs reach 0
	unmapped     bool
	writable     bool // mapped read-write: outputs may go there
}

type shmRegistry struct {
	lim     ShmLimits
	dir     string
	mu      sync.Mutex
	regions map[string]*shmRegion
	total   int64
}

func newShmRegistry(lim ShmLimits) *shmRegistry {
	return &shmRegistry{lim: lim.withDefaults(), dir: shmDir, regions: map[string]*shmRegion{}}
}

// shmRequest is the register call's body.
type shmRequest struct {
	Key      *string `json:"key"`
	Offset   *int64  `json:"offset"`
	ByteSize *int64  `json:"byte_size"`
}

// validKey accepts a POSIX shared memory name: "/name" or "name", one
// path component, printable, no "." or "..".
func validKey(key string) (string, error) {
	name := strings.TrimPrefix(key, "/")
	switch {
	case name == "" || name == "." || name == "..":
		return "", badf("key %q is not a shared memory name", key)
	case len(name) > 255:
		return "", badf("key of %d bytes, at most 255", len(name))
	case strings.ContainsAny(name, "/\\\x00"):
		return "", badf("key %q holds a path separator", key)
	}
	for _, c := range []byte(name) {
		if c < 0x20 || c == 0x7f {
			return "", badf("key %q holds a control character", key)
		}
	}
	return name, nil
}

func validRegionName(name string) error {
	if name == "" || len(name) > 255 {
		return badf("region name of %d bytes, want 1–255", len(name))
	}
	return nil
}

// register maps key's [offset, offset+size) as region name. uids are the
// owners accepted.
func (g *shmRegistry) register(name, key string, offset, size int64, uids []uint32) error {
	if err := validRegionName(name); err != nil {
		return err
	}
	file, err := validKey(key)
	if err != nil {
		return err
	}
	if offset < 0 || size <= 0 {
		return badf("region %q: offset %d and byte_size %d, want offset ≥ 0 and byte_size ≥ 1", name, offset, size)
	}
	if size > g.lim.MaxBytes {
		return badf("region %q: byte_size %d, at most %d", name, size, g.lim.MaxBytes)
	}
	g.mu.Lock()
	_, dup := g.regions[name]
	n, total := len(g.regions), g.total
	g.mu.Unlock()
	switch {
	case dup:
		return badf("region %q is already registered", name)
	case n >= g.lim.MaxRegions:
		return badf("%d regions registered, at most %d", n, g.lim.MaxRegions)
	case total+size > g.lim.MaxBytes:
		return badf("region %q: %d bytes more would make %d registered, at most %d", name, size, total+size, g.lim.MaxBytes)
	}
	// Read-write when the agent may (for outputs), else read-only.
	flags, prot := unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, unix.PROT_READ|unix.PROT_WRITE
	fd, err := unix.Open(filepath.Join(g.dir, file), flags|unix.O_RDWR, 0)
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EROFS) {
		prot = unix.PROT_READ
		fd, err = unix.Open(filepath.Join(g.dir, file), flags|unix.O_RDONLY, 0)
	}
	if err != nil {
		return badf("region %q: opening key %q: %v", name, key, err)
	}
	f := os.NewFile(uintptr(fd), key)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return badf("region %q: key %q: %v", name, key, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return badf("region %q: key %q is not a regular file", name, key)
	}
	owned := false
	for _, u := range uids {
		owned = owned || st.Uid == u
	}
	if !owned {
		f.Close()
		return badf("region %q: key %q is owned by uid %d, not by the caller nor the agent", name, key, st.Uid)
	}
	if offset > st.Size || size > st.Size-offset {
		f.Close()
		return badf("region %q: offset %d + byte_size %d is beyond key %q's %d bytes", name, offset, size, key, st.Size)
	}
	page := int64(os.Getpagesize())
	start := offset &^ (page - 1)
	if offset-start+size > math.MaxInt {
		f.Close()
		return badf("region %q: %d bytes do not fit this machine's address space", name, size)
	}
	m, err := unix.Mmap(fd, start, int(offset-start+size), prot, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return badf("region %q: mapping key %q: %v", name, key, err)
	}
	r := &shmRegion{name: name, key: key, offset: offset, size: size, file: f, mapping: m,
		data: m[offset-start : offset-start+size : offset-start+size], writable: prot&unix.PROT_WRITE != 0}
	g.mu.Lock()
	defer g.mu.Unlock()
	// Checked again: another call may have registered meanwhile.
	switch _, dup := g.regions[name]; {
	case dup:
		r.unmap()
		return badf("region %q is already registered", name)
	case len(g.regions) >= g.lim.MaxRegions || g.total+size > g.lim.MaxBytes:
		r.unmap()
		return badf("region %q: the shared memory limits (%d regions, %d bytes) are reached", name, g.lim.MaxRegions, g.lim.MaxBytes)
	}
	g.regions[name] = r
	g.total += size
	return nil
}

func (r *shmRegion) unmap() {
	unix.Munmap(r.mapping)
	r.file.Close()
	r.unmapped = true
}

// unregister drops name ("" = every region); a region in use is unmapped
// when its last reader is done. An unknown name is no error, as in Triton.
func (g *shmRegistry) unregister(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, r := range g.regions {
		if name != "" && n != name {
			continue
		}
		delete(g.regions, n)
		g.total -= r.size
		r.gone = true
		if r.refs == 0 {
			r.unmap()
		}
	}
}

// closeAll unregisters every region.
func (g *shmRegistry) closeAll() { g.unregister("") }

type shmStatus struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Offset   int64  `json:"offset"`
	ByteSize int64  `json:"byte_size"`
}

func (g *shmRegistry) status(name string) ([]shmStatus, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := []shmStatus{}
	for n, r := range g.regions {
		if name == "" || n == name {
			out = append(out, shmStatus{Name: r.name, Key: r.key, Offset: r.offset, ByteSize: r.size})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, badf("region %q is not registered", name)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// acquire holds region name mapped until release.
func (g *shmRegistry) acquire(name string) (*shmRegion, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.regions[name]
	if ok {
		r.refs++
	}
	return r, ok
}

func (g *shmRegistry) release(r *shmRegion) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r.refs--
	if r.gone && r.refs == 0 {
		r.unmap()
	}
}

// span checks that [offset, offset+size) lies within r and within its
// object as it is now (its owner may have shrunk it), and returns it.
func (r *shmRegion) span(what string, offset, size int64) ([]byte, error) {
	if offset > r.size || size > r.size-offset {
		return nil, badf("%s: shared_memory_offset %d + shared_memory_byte_size %d is beyond region %q's %d bytes", what, offset, size, r.name, r.size)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(r.file.Fd()), &st); err != nil {
		return nil, badf("%s: region %q: %v", what, r.name, err)
	}
	if end := r.offset + offset + size; st.Size < end {
		return nil, badf("%s: region %q's key %q shrank to %d bytes, the tensor ends at %d", what, r.name, r.key, st.Size, end)
	}
	return r.data[offset : offset+size : offset+size], nil
}

// read copies size bytes at offset within region name.
func (g *shmRegistry) read(input, name string, offset, size int64) ([]byte, error) {
	what := fmt.Sprintf("input %q", input)
	r, ok := g.acquire(name)
	if !ok {
		return nil, badf("%s: shared memory region %q is not registered", what, name)
	}
	defer g.release(r)
	src, err := r.span(what, offset, size)
	if err != nil {
		return nil, err
	}
	out := getInputBuf(int(size))
	if err := copyGuarded(out, src); err != nil {
		putInputBuf(out)
		return nil, badf("%s: region %q: %v", what, name, err)
	}
	return out, nil
}

// inputBufs recycles the buffers shared-memory inputs are copied into: a
// fresh 602 KB buffer per request (mobilenetv2) cost more than the copy
// itself, in allocation and garbage collection. Nothing keeps an input
// once the call returns (lifecycle.Infer's contract), so the handler puts
// them back after answering.
var inputBufs sync.Pool

func getInputBuf(n int) []byte {
	if p, ok := inputBufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n)
}

func putInputBuf(b []byte) {
	if cap(b) == 0 || cap(b) > maxPooledInput {
		return
	}
	b = b[:0]
	inputBufs.Put(&b)
}

// maxPooledInput is the largest buffer kept for reuse.
const maxPooledInput = 64 << 20

// recycle returns d's pooled input buffers; d's inputs must not be used
// afterwards.
func recycle(d *decoded) {
	for _, b := range d.pooled {
		putInputBuf(b)
	}
	d.pooled = nil
}

// writeOutputs writes the outputs asked for in shared memory into their
// regions, and records the bytes written in each wantOutput's size.
func (g *shmRegistry) writeOutputs(d *decoded, outs []runtime.Tensor) error {
	for i := range d.outputs {
		w := &d.outputs[i]
		if w.shm == nil {
			continue
		}
		what := fmt.Sprintf("output %q", w.name)
		var data []byte
		for _, o := range outs {
			if o.Name == w.name {
				data = o.Data
				if o.DType == runtime.String {
					data = joinBytes(o.Strings)
				}
			}
		}
		if int64(len(data)) > w.shm.size {
			return badf("%s: %d bytes, shared_memory_byte_size is %d", what, len(data), w.shm.size)
		}
		if err := g.write(what, w.shm.region, w.shm.offset, data); err != nil {
			return err
		}
		w.shm.size = int64(len(data))
	}
	return nil
}

func (g *shmRegistry) write(what, name string, offset int64, data []byte) error {
	r, ok := g.acquire(name)
	if !ok {
		return badf("%s: shared memory region %q is not registered", what, name)
	}
	defer g.release(r)
	if !r.writable {
		return badf("%s: region %q's key %q is not writable by the agent", what, name, r.key)
	}
	dst, err := r.span(what, offset, int64(len(data)))
	if err != nil {
		return err
	}
	if err := copyGuarded(dst, data); err != nil {
		return badf("%s: region %q: %v", what, name, err)
	}
	return nil
}

// copyGuarded copies src into dst, either of which may be a mapping of a
// file that shrinks under it: a fault becomes an error instead of
// crashing the agent.
func copyGuarded(dst, src []byte) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("the shared memory faulted while being read (shrunk by its owner?): %v", p)
		}
	}()
	copy(dst, src)
	return nil
}

// shmInput is an input that names a shared memory region; the decoder
// records it and the server reads it from the registry.
type shmInput struct {
	index        int // in decoded.inputs
	region       string
	offset, size int64
	elements     int64
}

// shmParams reads an input's shared memory parameters; ok is false when it
// has none.
func shmParams(kind, name string, p parameters) (region string, offset, size int64, ok bool, err error) {
	raw, has := p["shared_memory_region"]
	if !has {
		if _, o := p["shared_memory_byte_size"]; o {
			return "", 0, 0, false, badf("%s %q: shared_memory_byte_size without shared_memory_region", kind, name)
		}
		return "", 0, 0, false, nil
	}
	if err := json.Unmarshal(raw, &region); err != nil {
		return "", 0, 0, false, badf("%s %q: shared_memory_region is not a string: %s", kind, name, raw)
	}
	if err := validRegionName(region); err != nil {
		return "", 0, 0, false, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	size, has, err = p.int("shared_memory_byte_size")
	if err != nil {
		return "", 0, 0, false, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	if !has {
		return "", 0, 0, false, badf("%s %q: shared_memory_region without shared_memory_byte_size", kind, name)
	}
	if offset, _, err = p.int("shared_memory_offset"); err != nil {
		return "", 0, 0, false, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return region, offset, size, true, nil
}

// resolveShm fills the inputs that name shared memory.
func (g *shmRegistry) resolveShm(d *decoded) error {
	for _, s := range d.shm {
		t := &d.inputs[s.index]
		raw, err := g.read(t.Name, s.region, s.offset, s.size)
		if err != nil {
			return err
		}
		if t.DType != runtime.String {
			t.Data = raw
			d.pooled = append(d.pooled, raw)
			continue
		}
		t.Strings, err = splitBytes(t.Name, raw, s.elements) // copies into strings
		putInputBuf(raw)
		if err != nil {
			return err
		}
	}
	return nil
}

// HTTP handlers.

type peerKey struct{}

// peerUID records, for a unix socket connection, the caller's uid.
func peerUID(ctx context.Context, c net.Conn) context.Context {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ctx
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return ctx
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) { cred, _ = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if cred == nil {
		return ctx
	}
	return context.WithValue(ctx, peerKey{}, cred.Uid)
}

func (s *Server) shmRegister(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(r, 64<<10)
	if err != nil {
		writeError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	var req shmRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, "register: not a register request: "+err.Error())
		return
	}
	if req.Key == nil || req.ByteSize == nil {
		writeError(w, http.StatusBadRequest, `register: "key" and "byte_size" are required`)
		return
	}
	var off int64
	if req.Offset != nil {
		off = *req.Offset
	}
	uids := []uint32{uint32(os.Geteuid())}
	if u, ok := r.Context().Value(peerKey{}).(uint32); ok {
		uids = append(uids, u)
	}
	if err := s.shm.register(r.PathValue("name"), *req.Key, off, *req.ByteSize, uids); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) shmUnregister(w http.ResponseWriter, r *http.Request) {
	s.shm.unregister(r.PathValue("name"))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusOK)
}

func (s *Server) shmStatus(w http.ResponseWriter, r *http.Request) {
	st, err := s.shm.status(r.PathValue("name"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, st)
}
