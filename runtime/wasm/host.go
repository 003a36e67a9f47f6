package wasm

import (
	"context"

	"github.com/tetratelabs/wazero"

	"github.com/flotilla-edge/flotilla/runtime"
)

// HostModule is an import module offered to guests (wasi_ephemeral_nn).
// It is instantiated once per model; Bind gives each instance of the
// model its own state.
type HostModule interface {
	// Name is the import module's name.
	Name() string
	// Instantiate defines the module in r.
	Instantiate(ctx context.Context, r wazero.Runtime) error
	// Bind returns the state of one new instance of the model spec loads.
	Bind(spec runtime.LoadSpec) HostState
}

// HostState is one instance's state in a host module. The runtime passes
// every call into the instance a context from Context, so the module's
// functions find their state there.
type HostState interface {
	Context(ctx context.Context) context.Context
	Close() error
}
