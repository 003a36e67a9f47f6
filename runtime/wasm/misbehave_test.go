package wasm_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/wasm"
	"github.com/flotilla-edge/flotilla/runtime/wasm/internal/guestbuild"
)

// Modes of the misbehave guest (testdata/guests/misbehave).
const (
	modeEcho = iota
	modeLoop
	modeBomb
	modeWildPointer
	modeNotProtobuf
	modeError
	modeHuge
	modePanic
	modeBadTensor
)

func misbehave(t *testing.T, m runtime.Model, mode int32) ([]runtime.Tensor, error) {
	t.Helper()
	return m.Infer(context.Background(), []runtime.Tensor{i32Tensor("mode", mode)})
}

// echoWorks checks that the model still serves after a misbehaviour.
func echoWorks(t *testing.T, m runtime.Model) {
	t.Helper()
	out, err := misbehave(t, m, modeEcho)
	if err != nil || len(out) != 1 || out[0].Name != "mode" {
		t.Fatalf("echo after misbehaviour: %v, %v", out, err)
	}
}

func TestInfiniteLoopStopped(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{CallTimeout: 300 * time.Millisecond, Instances: 1}), slot(t, "misbehave"))
	start := time.Now()
	_, err := misbehave(t, m, modeLoop)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the loop ran %v past a 300ms deadline", d)
	}
	// The caller's own deadline stops it too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := m.Infer(ctx, []runtime.Tensor{i32Tensor("mode", modeLoop)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	echoWorks(t, m)
}

func TestMemoryBombRefused(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{MemoryLimitMiB: 64, Instances: 1}), slot(t, "misbehave"))
	_, err := misbehave(t, m, modeBomb)
	if !errors.Is(err, wasm.ErrMemoryLimit) || !strings.Contains(err.Error(), "64 MiB") {
		t.Fatalf("err = %v, want ErrMemoryLimit naming 64 MiB", err)
	}
	t.Log(err)
	echoWorks(t, m)
}

func TestMisbehavingGuest(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{MaxOutputBytes: 1 << 20, Instances: 1}), slot(t, "misbehave"))
	for _, c := range []struct {
		name string
		mode int32
		want error
		text string
	}{
		{"wild pointer", modeWildPointer, wasm.ErrBadOutput, "outside guest memory"},
		{"not protobuf", modeNotProtobuf, wasm.ErrBadOutput, "not a flotillapb.Tensors"},
		{"guest error", modeError, wasm.ErrGuest, "the guest refuses"},
		{"huge result", modeHuge, wasm.ErrTooLarge, "limit 1048576"},
		{"panic", modePanic, wasm.ErrTrap, "asked to panic"},
		{"bad tensor", modeBadTensor, wasm.ErrBadOutput, "needs 16 bytes, has 3"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := misbehave(t, m, c.mode)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want %v containing %q", err, c.want, c.text)
			}
			t.Log(err)
			echoWorks(t, m)
		})
	}
}

// TestLoopStoppedEverywhere runs the tiny module's endless loop on both
// engines, instrumented with yield points and (TinySIMD, which the
// rewriter refuses) under wazero's own checks: each stops at the deadline
// and the model keeps serving.
func TestLoopStoppedEverywhere(t *testing.T) {
	loop := []runtime.Tensor{i32Tensor("x", 1)}
	for _, c := range []struct {
		name   string
		code   []byte
		interp bool
	}{
		{"yieldpoints/compiler", guestbuild.Tiny(), false},
		{"yieldpoints/interpreter", guestbuild.Tiny(), true},
		{"wazero-checks/compiler", guestbuild.TinySIMD(), false},
		{"wazero-checks/interpreter", guestbuild.TinySIMD(), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := load(t, newRuntime(t, wasm.Config{CallTimeout: 100 * time.Millisecond, Interpreter: c.interp, CacheDir: t.TempDir()}), tinySlot(t, c.code))
			start := time.Now()
			if _, err := m.Infer(context.Background(), loop); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v, want DeadlineExceeded", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("the loop ran %v past a 100ms deadline", d)
			}
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			if _, err := m.Infer(ctx, loop); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want Canceled", err)
			}
			if out, err := m.Infer(context.Background(), nil); err != nil || len(out) != 0 {
				t.Fatalf("after the loops: %v, %v", out, err)
			}
		})
	}
}

// TestCloseStopsBusyCalls closes a model while calls loop in every
// instance and more wait for one: all return ErrClosed, none hangs.
func TestCloseStopsBusyCalls(t *testing.T) {
	m := load(t, newRuntime(t, wasm.Config{Instances: 2, CacheDir: t.TempDir()}), tinySlot(t, guestbuild.Tiny()))
	errs := make(chan error, 5)
	for range cap(errs) {
		go func() {
			_, err := m.Infer(context.Background(), []runtime.Tensor{i32Tensor("x", 1)})
			errs <- err
		}()
	}
	time.Sleep(100 * time.Millisecond)
	m.Close()
	timeout := time.After(30 * time.Second)
	for range cap(errs) {
		select {
		case err := <-errs:
			if !errors.Is(err, wasm.ErrClosed) {
				t.Errorf("err = %v, want ErrClosed", err)
			}
		case <-timeout:
			t.Fatal("a call still runs 30 s after Close")
		}
	}
}
