// Package monitortest builds the example monitor functions under
// runtime/wasm/testdata/guests (digitsmon, badmon) for tests outside
// runtime/wasm, whose internal guestbuild they cannot import, and compiles
// them ahead into a compilation cache: wazero's compiler, race-enabled,
// takes minutes for a Go guest.
package monitortest

import "github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"

// Prepare builds the named guests into dir and compiles them into the
// compilation cache folder cache (pass it as monitorfn.Config.CacheDir).
// It returns each guest's .wasm file.
func Prepare(dir, cache string, names ...string) (map[string]string, error) {
	return guestbuild.Prepare(dir, cache, names...)
}
