package wasm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"

	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/yieldpoint"
)

// The host function instrumented modules call every yieldpoint.Fuel loop
// iterations.
const (
	yieldModule = "flotilla_yield"
	yieldFunc   = "yield"
)

// instrument rewrites code to call yield from its loops (see package
// yieldpoint). ok is false for a module the rewriter refuses; it then runs
// under wazero's own checks (WithCloseOnContextDone), which leave compiled
// code for Go at every loop iteration and cost Go guests about 4×.
// The runtime remembers the rewrites of the last few modules it loaded
// (by hash): a model is reloaded often (a restart, a new slot) and the
// rewrite of a Go guest takes ~100 ms.
func (r *Runtime) instrument(code []byte) (out []byte, ok bool, err error) {
	sum := sha256.Sum256(code)
	r.mu.Lock()
	done, hit := r.rewrites[sum]
	r.mu.Unlock()
	if hit {
		if done.ok {
			return done.code, true, nil
		}
		return code, false, nil
	}
	out, err = yieldpoint.Instrument(code, yieldModule, yieldFunc)
	switch {
	case err == nil:
		ok = true
	case errors.Is(err, yieldpoint.ErrUnsupported):
		out = code
	default:
		return nil, false, fmt.Errorf("compile: %w", err)
	}
	r.mu.Lock()
	if len(r.rewrites) >= maxRewrites {
		clear(r.rewrites)
	}
	if ok {
		r.rewrites[sum] = rewrite{code: out, ok: true}
	} else {
		r.rewrites[sum] = rewrite{}
	}
	r.mu.Unlock()
	return out, ok, nil
}

const maxRewrites = 8

type rewrite struct {
	code []byte // nil when the rewriter refused the module
	ok   bool
}

// instantiateYield defines the yield function in r: it stops a call whose
// context is done (deadline or cancellation) or whose module was closed,
// and, being Go code, lets the scheduler preempt the goroutine.
func instantiateYield(ctx context.Context, r wazero.Runtime) error {
	_, err := r.NewHostModuleBuilder(yieldModule).
		NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(yield), nil, nil).
		Export(yieldFunc).
		Instantiate(ctx)
	return err
}

func yield(ctx context.Context, mod api.Module, _ []uint64) {
	if err := ctx.Err(); err != nil {
		code := uint32(sys.ExitCodeDeadlineExceeded)
		if errors.Is(err, context.Canceled) {
			code = sys.ExitCodeContextCanceled
		}
		mod.CloseWithExitCode(ctx, code)
		panic(sys.NewExitError(code))
	}
	if mod.IsClosed() {
		panic(ErrClosed)
	}
}
