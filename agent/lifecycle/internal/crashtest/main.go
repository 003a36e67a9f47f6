// Command crashtest runs the model lifecycle the way the agent does — real
// SQLite state, the real ONNX Runtime plugin, agent/unpack, agent/reap —
// for the lifecycle's crash test, which kills it with SIGKILL at every
// journaled step and at random moments and checks each restart.
//
// One run: reap orphaned plugins, open everything (recovering whatever
// was in flight), print the active release and check that it answers the
// digits test rows correctly, then install the bundle in -bundle (unless
// it is active or rejected) and wait until nothing is in flight (committed,
// rolled back or rejected). The step to die at comes from $FLOTILLA_CRASH_AT (a
// lifecycle.Step*): the process sends itself SIGKILL right after that
// step is durable. Lines on stdout, for the test to read:
//
//	REAPED n | PLUGINS n | START release phase | INFER ok release |
//	REJECTED reason | END release health
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/reap"
	"github.com/flotilla-edge/flotilla/agent/state"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"github.com/flotilla-edge/flotilla/runtime"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

func main() {
	data := flag.String("data", "", "data folder")
	plugins := flag.String("plugins", "", "plugin folder")
	bundleDir := flag.String("bundle", "", "folder with manifest.pb and chunks/<sha256>")
	rows := flag.String("rows", "", "digits rows.json")
	probation := flag.Duration("probation", 300*time.Millisecond, "default probation")
	killPlugin := flag.Bool("kill-plugin", false, "kill the plugin process during probation (a crash the candidate is blamed for)")
	flag.Parse()
	if err := run(*data, *plugins, *bundleDir, *rows, *probation, *killPlugin, os.Getenv("FLOTILLA_CRASH_AT")); err != nil {
		fmt.Fprintln(os.Stderr, "crashtest:", err)
		os.Exit(2)
	}
}

func run(data, plugins, bundleDir, rowsFile string, probation time.Duration, killPlugin bool, crashAt string) error {
	ctx := context.Background()
	marker := reap.Marker(data)
	killed, err := reap.Orphans(marker, 10*time.Second)
	if err != nil {
		return err
	}
	fmt.Println("REAPED", len(killed))
	db, err := state.Open(ctx, filepath.Join(data, "state"))
	if err != nil {
		return err
	}
	defer db.Close()
	host, err := native.Open(ctx, native.Config{Dir: plugins, Env: []string{"FLOTILLA_ORT_LIB=" + os.Getenv("FLOTILLA_ORT_LIB"), marker},
		Logger: hclog.New(&hclog.LoggerOptions{Level: hclog.Error, Output: os.Stderr}), PollInterval: 20 * time.Millisecond})
	if err != nil {
		return err
	}
	defer host.Close()
	plugin, ok := host.Runtime("onnx")
	if !ok {
		return fmt.Errorf("no onnx plugin: %v", host.Failed())
	}
	pids, _ := reap.Find(marker)
	fmt.Println("PLUGINS", len(pids))
	l, err := lifecycle.Open(ctx, lifecycle.Config{
		Dir: filepath.Join(data, "models"), Store: db, Runtimes: lifecycle.RuntimeList{plugin},
		DefaultPolicy: lifecycle.Policy{Duration: probation}, CheckInterval: 20 * time.Millisecond,
		StepHook: func(step string) {
			if step == crashAt {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		},
	})
	if err != nil {
		return err
	}
	defer l.Close()
	st, _ := l.State("digits")
	fmt.Println("START", st.ActiveRelease, st.Phase)
	if st.ActiveRelease != 0 {
		if err := checkRows(ctx, l, rowsFile); err != nil {
			return err
		}
	}

	raw, err := os.ReadFile(filepath.Join(bundleDir, "manifest.pb"))
	if err != nil {
		return err
	}
	m := &pb.BundleManifest{}
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		return err
	}
	digest := sumHex(raw)
	if reason, rejected := l.Rejected("digits", digest); rejected {
		fmt.Println("REJECTED", reason)
	} else if st.ActiveRelease != m.GetRelease() {
		dir, err := l.PrepareSlot(ctx, "digits", 0)
		if err != nil {
			return err
		}
		if err := unpack.Unpack(ctx, chunkDir(filepath.Join(bundleDir, "chunks")), m, dir, unpack.Limits{}); err != nil {
			return err
		}
		if err := l.Stage(ctx, raw); errors.Is(err, lifecycle.ErrRejected) {
			fmt.Println("REJECTED", err)
		} else if err != nil {
			return err
		}
	}
	if killPlugin {
		if s, _ := l.State("digits"); s.Phase == lifecycle.PhaseProbation {
			syscall.Kill(plugin.Pid(), syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, _ := l.State("digits")
		if s.Phase == lifecycle.PhaseIdle {
			fmt.Println("END", s.ActiveRelease, s.Health)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("stuck in %+v", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkRows runs the digits rows through the active release (waiting out
// a plugin restart) and compares with the reference outputs.
func checkRows(ctx context.Context, l *lifecycle.Lifecycle, file string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var rows struct{ Pixels, Probabilities [][]float64 }
	if err := json.Unmarshal(b, &rows); err != nil {
		return err
	}
	var data []byte
	for _, r := range rows.Pixels {
		for _, v := range r {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
		}
	}
	in := []runtime.Tensor{{Name: "pixels", DType: runtime.Float32, Shape: []int64{int64(len(rows.Pixels)), 64}, Data: data}}
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := l.Infer(ctx, "digits", in)
		if errors.Is(err, runtime.ErrUnavailable) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("infer: %w", err)
		}
		out := res.Outputs[0].Data
		for i, r := range rows.Probabilities {
			for j, want := range r {
				got := float64(math.Float32frombits(binary.LittleEndian.Uint32(out[4*(i*10+j):])))
				if math.Abs(got-want) > 1e-4 {
					return fmt.Errorf("release %d row %d class %d: %g, want %g", res.Release, i, j, got, want)
				}
			}
		}
		fmt.Println("INFER ok", res.Release)
		return nil
	}
}

// chunkDir reads chunks from files named by their hex SHA-256.
type chunkDir string

func (d chunkDir) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	return os.ReadFile(filepath.Join(string(d), fmt.Sprintf("%x", sum)))
}

func sumHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
