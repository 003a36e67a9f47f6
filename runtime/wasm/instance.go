package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm/abi"
)

// instance is one instantiation of a model's module. One call at a time.
type instance struct {
	mod                     api.Module
	alloc, free, infer, dsc api.Function
	states                  []HostState
	stderr                  *tail
	memLimit                uint64
	// broken is set when a call failed in a way that leaves the instance
	// unusable or untrustworthy; the model then discards it.
	broken bool
}

func (m *Model) newInstance(ctx context.Context) (*instance, error) {
	in := &instance{stderr: &tail{max: 4096}, memLimit: m.memLimit}
	for _, hm := range m.rt.cfg.HostModules {
		in.states = append(in.states, hm.Bind(m.spec))
	}
	cfg := wazero.NewModuleConfig().
		WithName(""). // anonymous: many instances of one module
		WithStartFunctions(abi.ExportInitialize).
		WithStdout(in.stderr).WithStderr(in.stderr).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().
		WithRandSource(rand.Reader)
	for k, v := range m.env {
		cfg = cfg.WithEnv(k, v)
	}
	ctx, cancel := context.WithTimeout(ctx, m.rt.cfg.CallTimeout)
	defer cancel()
	mod, err := m.wr.InstantiateModule(in.bind(ctx), m.compiled, cfg)
	if err != nil {
		in.closeStates()
		return nil, fmt.Errorf("wasm: instantiate: %w", in.callError(ctx, abi.ExportInitialize, err))
	}
	in.mod = mod
	in.alloc = mod.ExportedFunction(abi.ExportAlloc)
	in.free = mod.ExportedFunction(abi.ExportFree)
	in.infer = mod.ExportedFunction(abi.ExportInfer)
	in.dsc = mod.ExportedFunction(abi.ExportDescribe)
	return in, nil
}

// bind gives ctx the instance's host-module states.
func (in *instance) bind(ctx context.Context) context.Context {
	for _, s := range in.states {
		ctx = s.Context(ctx)
	}
	return ctx
}

// call runs infer on the inputs, size bytes encoded, and returns a copy of
// the guest's result. The inputs are encoded straight into the buffer the
// guest allocated: no copy on the host.
func (in *instance) call(ctx context.Context, inputs []runtime.Tensor, size, maxOut int) ([]byte, error) {
	ctx = in.bind(ctx)
	res, err := in.alloc.Call(ctx, uint64(size))
	if err != nil {
		return nil, in.callError(ctx, abi.ExportAlloc, err)
	}
	ptr := uint32(res[0])
	buf, ok := in.mod.Memory().Read(ptr, uint32(size))
	if !ok {
		in.broken = true
		return nil, fmt.Errorf("%w: alloc(%d) returned %#x, outside guest memory", ErrBadOutput, size, ptr)
	}
	if n := len(abi.AppendTensors(buf[:0], inputs)); n != size {
		panic(fmt.Sprintf("wasm: inputs encoded in %d bytes, sized %d", n, size)) // a bug in abi
	}
	res, err = in.infer.Call(ctx, uint64(ptr), uint64(size))
	if err != nil {
		return nil, in.callError(ctx, abi.ExportInfer, err)
	}
	if _, err := in.free.Call(ctx, uint64(ptr), uint64(size)); err != nil {
		return nil, in.callError(ctx, abi.ExportFree, err)
	}
	return in.result(ctx, abi.ExportInfer, res[0], maxOut)
}

// describe runs the optional describe export; ok is false without one.
func (in *instance) describe(ctx context.Context, maxOut int) (b []byte, ok bool, err error) {
	if in.dsc == nil {
		return nil, false, nil
	}
	ctx = in.bind(ctx)
	res, err := in.dsc.Call(ctx)
	if err != nil {
		return nil, false, in.callError(ctx, abi.ExportDescribe, err)
	}
	b, err = in.result(ctx, abi.ExportDescribe, res[0], maxOut)
	return b, err == nil, err
}

// result copies out and frees a packed result, turning a guest error
// message into an error.
func (in *instance) result(ctx context.Context, export string, packed uint64, maxOut int) ([]byte, error) {
	ptr, n, isErr := abi.Unpack(packed)
	if uint64(n) > uint64(maxOut) {
		in.broken = true
		return nil, fmt.Errorf("%w: %s returned %d bytes, limit %d", ErrTooLarge, export, n, maxOut)
	}
	b, ok := in.mod.Memory().Read(ptr, n)
	if !ok {
		in.broken = true
		return nil, fmt.Errorf("%w: %s returned [%#x, +%d), outside guest memory of %d bytes", ErrBadOutput, export, ptr, n, in.mod.Memory().Size())
	}
	b = bytes.Clone(b)
	if _, err := in.free.Call(ctx, uint64(ptr), uint64(n)); err != nil {
		return nil, in.callError(ctx, abi.ExportFree, err)
	}
	if isErr {
		return nil, fmt.Errorf("%w: %s", ErrGuest, truncate(string(b), 1024))
	}
	return b, nil
}

// callError explains why a call into the guest failed, and marks the
// instance broken: after a trap or an exit it cannot be trusted.
func (in *instance) callError(ctx context.Context, export string, err error) error {
	in.broken = true
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded:
			return fmt.Errorf("wasm: %s stopped: %w", export, context.DeadlineExceeded)
		case sys.ExitCodeContextCanceled:
			return fmt.Errorf("wasm: %s stopped: %w", export, context.Canceled)
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("wasm: %s stopped: %w (%s)", export, ctx.Err(), firstLine(err))
	}
	out := in.stderr.String()
	if in.outOfMemory(out) {
		return fmt.Errorf("%w (%d MiB) in %s: %s", ErrMemoryLimit, in.memLimit>>20, export, summary(out, 3))
	}
	if exit != nil {
		return fmt.Errorf("%w: %s: exit code %d: %s", ErrTrap, export, exit.ExitCode(), summary(out, 3))
	}
	if out != "" {
		return fmt.Errorf("%w: %s: %s: %s", ErrTrap, export, firstLine(err), summary(out, 3))
	}
	return fmt.Errorf("%w: %s: %s", ErrTrap, export, firstLine(err))
}

// outOfMemory tells a memory bomb from other deaths: the Go runtime and
// most allocators say so on stderr; otherwise memory at the cap does.
func (in *instance) outOfMemory(stderr string) bool {
	if strings.Contains(stderr, "out of memory") {
		return true
	}
	return in.mod != nil && uint64(in.mod.Memory().Size())+(4<<20) >= in.memLimit
}

func (in *instance) close(ctx context.Context) {
	if in.mod != nil {
		in.mod.Close(ctx)
	}
	in.closeStates()
}

func (in *instance) closeStates() {
	for _, s := range in.states {
		s.Close()
	}
	in.states = nil
}

// tail keeps the first and the last max/2 bytes written to it: a guest's
// stderr, quoted in errors (a Go panic's message comes first, its
// goroutine dump after).
type tail struct {
	mu         sync.Mutex
	max        int
	head, last []byte
	cut        bool
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if room := t.max/2 - len(t.head); room > 0 {
		k := min(room, len(p))
		t.head = append(t.head, p[:k]...)
		p = p[k:]
	}
	t.last = append(t.last, p...)
	if over := len(t.last) - t.max/2; over > 0 {
		t.last = append(t.last[:0], t.last[over:]...)
		t.cut = true
	}
	return n, nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cut {
		return string(t.head) + "\n…\n" + string(t.last)
	}
	return string(t.head) + string(t.last)
}

// summary picks what explains a guest's death from its stderr: the
// panic and fatal-error lines if any, else the last n lines.
func summary(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	var key []string
	for _, l := range lines {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") || strings.HasPrefix(l, "runtime: ") {
			key = append(key, l)
		}
	}
	if len(key) > 0 {
		lines = key
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return truncate(strings.Join(lines, " | "), 512)
}

// firstLine drops the wasm stack trace wazero appends to trap errors.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
