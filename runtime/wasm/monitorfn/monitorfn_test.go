package monitorfn_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn/monitortest"
)

var (
	buildOnce sync.Once
	buildDir  string
	guests    map[string]string // name → .wasm
	cache     string            // their compilation cache, filled outside -race
	buildErr  error
)

// TestMain removes the guests the tests built. They are built on first
// need, not here: fuzzing workers, which run no test, need none.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// read returns the named example guest's module, building the guests
// once.
func read(t testing.TB, name string) []byte {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "monitorfn-"); buildErr != nil {
			return
		}
		cache = filepath.Join(buildDir, "cache")
		guests, buildErr = monitortest.Prepare(buildDir, cache, "digitsmon", "badmon")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	b, err := os.ReadFile(guests[name])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func load(t testing.TB, code []byte, export string, cfg monitorfn.Config) *monitorfn.Function {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = cache
	}
	f, err := monitorfn.Load(context.Background(), code, export, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// image encodes 64 pixels as float32 little-endian, the digits model's
// input row.
func image(px []float32) []byte {
	b := make([]byte, 0, 4*len(px))
	for _, v := range px {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// referenceFeatures is digitsmon's computation, written again here: mean
// intensity, ink fraction (> 0.5), centre of mass x and y.
func referenceFeatures(px []float32) []float64 {
	var sum, ink, mx, my float64
	for i, p := range px {
		v := float64(p)
		sum += v
		if v > 0.5 {
			ink++
		}
		mx += v * float64(i%8)
		my += v * float64(i/8)
	}
	if sum == 0 {
		return []float64{0, ink / 64, 3.5, 3.5}
	}
	return []float64{sum / 64, ink / 64, mx / sum, my / sum}
}

// TestDigitsMonitorMatchesReference: the digits monitor's features are, bit
// for bit, those the Go reference computes, for random images, a blank one
// and a one-pixel one; a row of the wrong size is the guest's error -1.
func TestDigitsMonitorMatchesReference(t *testing.T) {
	f := load(t, read(t, "digitsmon"), "features", monitorfn.Config{})
	ctx := context.Background()
	rows := [][]float32{make([]float32, 64)}
	corner := make([]float32, 64)
	corner[63] = 1
	rows = append(rows, corner)
	s := uint32(7)
	for range 50 {
		px := make([]float32, 64)
		for i := range px {
			s = s*1664525 + 1013904223
			px[i] = float32(s>>28) / 16 // the digits data's multiples of 1/16
		}
		rows = append(rows, px)
	}
	for i, px := range rows {
		got, err := f.Call(ctx, image(px))
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
		want := referenceFeatures(px)
		if len(got) != len(want) {
			t.Fatalf("row %d: %d features, want %d", i, len(got), len(want))
		}
		for k := range want {
			if math.Float64bits(got[k]) != math.Float64bits(want[k]) {
				t.Errorf("row %d feature %d: %v, want %v", i, k, got[k], want[k])
			}
		}
	}
	if _, err := f.Call(ctx, make([]byte, 255)); !errors.Is(err, monitorfn.ErrGuest) {
		t.Errorf("a 255-byte row: %v, want ErrGuest", err)
	}
	if _, err := f.Call(ctx, make([]byte, 2<<20)); !errors.Is(err, monitorfn.ErrTooLarge) {
		t.Errorf("a 2 MiB row: %v, want ErrTooLarge", err)
	}
	if got, err := f.Call(ctx, image(corner)); err != nil || got[2] != 7 || got[3] != 7 {
		t.Errorf("after the errors: %v, %v; want the corner's centre (7, 7)", got, err)
	}
}

// badCall runs badmon in mode.
func badCall(f *monitorfn.Function, mode byte) ([]float64, error) {
	return f.Call(context.Background(), []byte{mode, 0, 0})
}

// TestBadMonitorIsContained: each misbehaviour of badmon ends in its own
// error, within the limits, and the function serves again afterwards (a
// fresh instance where the old one cannot be trusted).
func TestBadMonitorIsContained(t *testing.T) {
	f := load(t, read(t, "badmon"), "features", monitorfn.Config{Fuel: 1 << 22, MemoryLimitMiB: 32, CallTimeout: 20 * time.Second})
	for _, c := range []struct {
		name string
		mode byte
		want error
	}{
		{"infinite loop", 1, monitorfn.ErrFuel},
		{"more results than room", 2, monitorfn.ErrOutput},
		{"negative return", 3, monitorfn.ErrGuest},
		{"memory bomb", 4, monitorfn.ErrTrap},
		{"panic", 5, monitorfn.ErrTrap},
	} {
		start := time.Now()
		_, err := badCall(f, c.mode)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		t.Logf("%s: %v after %v", c.name, err, time.Since(start))
		got, err := badCall(f, 0)
		if err != nil || len(got) != 1 || got[0] != 3 {
			t.Errorf("after %s: %v, %v; want [3]", c.name, got, err)
		}
	}
}

// TestInfiniteLoopStopsOnTime: with fuel to spare, the call's deadline
// still stops an infinite loop, well within twice the deadline.
func TestInfiniteLoopStopsOnTime(t *testing.T) {
	f := load(t, read(t, "badmon"), "features", monitorfn.Config{Fuel: math.MaxUint64 / 2, CallTimeout: 200 * time.Millisecond})
	start := time.Now()
	_, err := badCall(f, 1)
	if !errors.Is(err, monitorfn.ErrFuel) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%v, want ErrFuel from the deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("stopped after %v, deadline 200ms", d)
	}
}

// TestFuelIsCounted: the fuel meter stops a loop after about Fuel
// iterations, not only at the deadline: a small fuel stops it much sooner
// than a large one.
func TestFuelIsCounted(t *testing.T) {
	elapsed := func(fuel uint64) time.Duration {
		f := load(t, read(t, "badmon"), "features", monitorfn.Config{Fuel: fuel, CallTimeout: 30 * time.Second})
		start := time.Now()
		if _, err := badCall(f, 1); !errors.Is(err, monitorfn.ErrFuel) || errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("fuel %d: %v, want ErrFuel from the meter", fuel, err)
		}
		return time.Since(start)
	}
	small, large := elapsed(1<<16), elapsed(1<<26)
	t.Logf("fuel 2^16: %v, 2^26: %v", small, large)
	if small*10 > large {
		t.Errorf("fuel 2^16 took %v, 2^26 %v: the meter does not count", small, large)
	}
}

func TestLoadRefusesBadModules(t *testing.T) {
	good := read(t, "digitsmon")
	// The hand-made modules have one page of memory: a small buffer.
	small := monitorfn.Config{CacheDir: cache, MaxInputBytes: 1024, MaxFeatures: 16}
	for _, c := range []struct {
		name   string
		code   []byte
		export string
		want   error
	}{
		{"truncated", good[:len(good)/2], "features", monitorfn.ErrModule},
		{"garbage", []byte("\x00asm\x01\x00\x00\x00\x07\xff\xff\xff\xff\x0fgarbage"), "features", monitorfn.ErrModule},
		{"not wasm", []byte("#!/bin/sh\necho hi\n"), "features", monitorfn.ErrModule},
		{"no such export", good, "features2", monitorfn.ErrModule},
		{"export named alloc", good, "alloc", monitorfn.ErrModule},
		{"too large", make([]byte, 17<<20), "features", monitorfn.ErrTooLarge},
		{"alloc without room for the buffer", asm(asmOpts{allocPtr: 65536 - 1024}), "features", monitorfn.ErrOutput},
		{"an extra function", asm(asmOpts{extraExport: "infer"}), "features", monitorfn.ErrModule},
		{"an exported global", asm(asmOpts{exportGlobal: true}), "features", monitorfn.ErrModule},
		{"no alloc", asm(asmOpts{noAlloc: true}), "features", monitorfn.ErrModule},
		{"no memory export", asm(asmOpts{noMemoryExport: true}), "features", monitorfn.ErrModule},
		{"an import from env", asm(asmOpts{importEnv: true}), "features", monitorfn.ErrModule},
		{"a wrong signature", asm(asmOpts{wrongSig: true}), "features", monitorfn.ErrModule},
		{"alloc outside memory", asm(asmOpts{allocPtr: 1 << 20}), "features", monitorfn.ErrOutput},
	} {
		f, err := monitorfn.Load(context.Background(), c.code, c.export, small)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if f != nil {
			f.Close()
		}
	}
	// The hand-made module itself loads and returns no features.
	f := load(t, asm(asmOpts{}), "features", small)
	if got, err := f.Call(context.Background(), []byte{1, 2, 3}); err != nil || len(got) != 0 {
		t.Errorf("hand-made module: %v, %v", got, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Call(context.Background(), nil); !errors.Is(err, monitorfn.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}

// TestConcurrentCalls: calls from many goroutines each get their own
// input's features (they run one at a time on one instance).
func TestConcurrentCalls(t *testing.T) {
	f := load(t, read(t, "digitsmon"), "features", monitorfn.Config{})
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			px := make([]float32, 64)
			px[g] = 1
			want := referenceFeatures(px)
			for range 50 {
				got, err := f.Call(context.Background(), image(px))
				if err != nil || got[2] != want[2] || got[3] != want[3] {
					errs <- fmt.Errorf("goroutine %d: %v, %v; want %v", g, got, err, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
