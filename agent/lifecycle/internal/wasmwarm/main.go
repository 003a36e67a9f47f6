// Command wasmwarm compiles WASM models into runtime/wasm's on-disk
// compilation cache. The lifecycle's tests run it (built without -race)
// from TestMain: compiling a Go-built guest in a -race test binary takes a
// minute on two cores, loading it from the cache a fraction of a second,
// and the cache key is the module and the CPU, not how the loader was
// built.
//
//	wasmwarm -cache DIR MODEL.wasm...
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
		fmt.Fprintln(os.Stderr, "wasmwarm:", err)
		os.Exit(1)
	}
}

func run(cache string, modules []string) error {
	rt, err := wasm.New(wasm.Config{CacheDir: cache})
	if err != nil {
		return err
	}
	defer rt.Close()
	for _, path := range modules {
		m, err := rt.Load(context.Background(), runtime.LoadSpec{Dir: filepath.Dir(path), Entry: filepath.Base(path)})
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		m.Close()
	}
	return nil
}
