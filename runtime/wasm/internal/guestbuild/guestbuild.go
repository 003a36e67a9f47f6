// Package guestbuild builds the example guests under
// runtime/wasm/testdata/guests with the Go toolchain, for tests and
// benchmarks (make wasm-guests builds the same for people).
package guestbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const pkgPrefix = "github.com/flotilla-edge/flotilla/runtime/wasm/testdata/guests/"

// Build compiles guest name (mlp, misbehave, nndigits) into dir/name.wasm
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
