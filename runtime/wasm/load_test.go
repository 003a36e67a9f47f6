package wasm_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"
)

func TestPathEscapeRefused(t *testing.T) {
	rt := newRuntime(t, wasm.Config{})
	spec := slot(t, "mlp")
	outside := filepath.Join(t.TempDir(), "outside.wasm")
	b, _ := os.ReadFile(guests["mlp"])
	os.WriteFile(outside, b, 0o644)
	os.Symlink(outside, filepath.Join(spec.Dir, "link.wasm"))
	for _, entry := range []string{"../outside.wasm", outside, "link.wasm", "../" + filepath.Base(spec.Dir) + "/../outside.wasm"} {
		s := spec
		s.Entry = entry
		if m, err := rt.Load(context.Background(), s); err == nil {
			m.Close()
			t.Errorf("entry %q outside the slot loaded", entry)
		}
	}
}

func TestBadModulesRefused(t *testing.T) {
	rt := newRuntime(t, wasm.Config{MaxModuleBytes: 1 << 20})
	dir := t.TempDir()
	write := func(name string, b []byte) { os.WriteFile(filepath.Join(dir, name), b, 0o644) }
	big, _ := os.ReadFile(guests["mlp"])
	write("big.wasm", big)
	write("garbage.wasm", []byte("this is not wasm"))
	write("empty.wasm", []byte("\x00asm\x01\x00\x00\x00")) // a valid module with no exports
	os.Mkdir(filepath.Join(dir, "folder.wasm"), 0o755)
	for entry, want := range map[string]error{
		"big.wasm":     wasm.ErrTooLarge,
		"empty.wasm":   wasm.ErrABI,
		"folder.wasm":  runtime.ErrInvalidInput,
		"missing.wasm": fs.ErrNotExist,
	} {
		_, err := rt.Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: entry})
		if !errors.Is(err, want) {
			t.Errorf("%s: err = %v, want %v", entry, err, want)
		}
	}
	if _, err := rt.Load(context.Background(), runtime.LoadSpec{Dir: dir, Entry: "garbage.wasm"}); err == nil || !strings.Contains(err.Error(), "compile") {
		t.Errorf("garbage: err = %v, want a compile error", err)
	}
}

func TestOptions(t *testing.T) {
	rt := newRuntime(t, wasm.Config{MemoryLimitMiB: 128})
	spec := tinySlot(t, guestbuild.Tiny())
	for _, opts := range []map[string]string{
		{"memory_limit_mib": "256"}, // above the runtime's cap
		{"memory_limit_mib": "lots"},
		{"threads": "4"},
	} {
		spec.Options = opts
		if _, err := rt.Load(context.Background(), spec); !errors.Is(err, runtime.ErrInvalidInput) {
			t.Errorf("options %v: err = %v, want ErrInvalidInput", opts, err)
		}
	}
	spec.Options = map[string]string{"memory_limit_mib": "64", "env.MODE": "test"}
	load(t, rt, spec)
}

// TestCompilationCache loads a module twice through runtimes sharing a
// cache folder: the first fills it, the second finds the compiled code.
// The module is the tiny hand-made one (a Go guest takes minutes to
// compile under -race); TestPrecompiled covers Go guests.
func TestCompilationCache(t *testing.T) {
	cache := t.TempDir()
	spec := tinySlot(t, guestbuild.Tiny())
	rt := newRuntime(t, wasm.Config{CacheDir: cache})
	if !rt.Compiler() {
		t.Log("no wazero compiler on this platform: the cache stays empty")
		return
	}
	load(t, rt, spec).Close()
	files := cacheFiles(t, cache)
	if len(files) == 0 {
		t.Fatal("the compilation cache folder is empty after a load")
	}
	rt.Close()
	m := load(t, newRuntime(t, wasm.Config{CacheDir: cache}), spec)
	if out, err := m.Infer(context.Background(), nil); err != nil || len(out) != 0 {
		t.Fatalf("infer from the cached module: %v, %v", out, err)
	}
	if after := cacheFiles(t, cache); len(after) != len(files) {
		t.Fatalf("second load changed the cache: %d files, then %d", len(files), len(after))
	}
}

// TestPrecompiled: Compile fills the cache that Load then uses, for a Go
// guest (TestMain compiled the guests into sharedCache the same way, in
// another process).
func TestPrecompiled(t *testing.T) {
	rt := newRuntime(t, wasm.Config{})
	if !rt.Compiler() {
		t.Log("no wazero compiler on this platform: nothing is cached")
		return
	}
	before := len(cacheFiles(t, sharedCache))
	spec := slot(t, "mlp")
	if err := rt.Compile(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	checkMLP(t, load(t, rt, spec), 2, 5)
	if after := len(cacheFiles(t, sharedCache)); after != before {
		t.Fatalf("the precompiled cache had %d files, then %d: mlp was compiled again", before, after)
	}
	spec.Entry = "missing.wasm"
	if err := rt.Compile(context.Background(), spec); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("compile a missing module: %v", err)
	}
}

func cacheFiles(t *testing.T, dir string) []string {
	var files []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestDescribe(t *testing.T) {
	info := newRuntime(t, wasm.Config{Interpreter: true}).Describe()
	if info.Name != "wasm" || !strings.HasPrefix(info.Version, "wazero") || !strings.HasSuffix(info.Version, "interpreter") {
		t.Fatalf("info %+v", info)
	}
}
