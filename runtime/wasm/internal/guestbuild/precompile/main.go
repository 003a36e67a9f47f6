// Command precompile fills a wazero compilation cache with the given
// modules, compiled as runtime/wasm compiles them (wasm.Runtime.Compile).
// Test mains run it as a separate
// process built without -race, so that race-enabled tests find the Go
// guests compiled: wazero's compiler, race-instrumented, takes minutes
// for one.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
)

func main() {
	cache := flag.String("cache", "", "compilation cache folder")
	flag.Parse()
	if err := run(*cache, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "precompile:", err)
		os.Exit(1)
	}
}

func run(cache string, files []string) error {
	if cache == "" {
		return fmt.Errorf("-cache is required")
	}
	rt, err := wasm.New(wasm.Config{CacheDir: cache})
	if err != nil {
		return err
	}
	defer rt.Close()
	for _, f := range files {
		if err := rt.Compile(context.Background(), runtime.LoadSpec{Dir: filepath.Dir(f), Entry: filepath.Base(f)}); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	return nil
}
