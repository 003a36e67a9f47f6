// Package guestbuild builds the example guests under
// runtime/wasm/testdata/guests with the Go toolchain, for tests and
// benchmarks (make wasm-guests builds the same for people), compiles them
// ahead into a compilation cache, and assembles a tiny module by hand.
package guestbuild

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
)

const pkgPrefix = "github.com/flotilla-edge/flotilla/runtime/wasm/testdata/guests/"

// Build compiles guest name (mlp, misbehave, nndigits, digitsmon) into dir/name.wasm
// as a wasip1 reactor and returns the file's path.
func Build(dir, name string) (string, error) {
	out := filepath.Join(dir, name+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", out, pkgPrefix+name)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("guestbuild: go build %s: %w\n%s", name, err, b)
	}
	return out, nil
}

// Prepare builds the named guests into dir, in parallel, and compiles
// them into the compilation cache folder cache with the precompile
// command, built without -race. It returns each guest's file.
func Prepare(dir, cache string, names ...string) (map[string]string, error) {
	files := make(map[string]string, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		files[name] = filepath.Join(dir, name+".wasm")
		wg.Go(func() { _, errs[i] = Build(dir, name) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	// wazero keys its cache folder by its version as the running binary
	// reports it, and a test binary reports none ("dev"): the command
	// pretends to be the caller.
	args := []string{"run", "-ldflags=-X=github.com/tetratelabs/wazero/internal/version.version=" + wazeroVersion(),
		"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild/precompile", "-cache", cache}
	for _, name := range names {
		args = append(args, files[name])
	}
	if b, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("guestbuild: precompile: %w\n%s", err, b)
	}
	return files, nil
}

// wazeroVersion is the version wazero finds for itself in this binary
// (its internal/version package, repeated).
func wazeroVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if strings.Contains(d.Path, "github.com/tetratelabs/wazero") && d.Version != "" && d.Version != "(devel)" {
				return d.Version
			}
		}
	}
	return "dev"
}
