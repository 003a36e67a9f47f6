package lifecycle

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/reap"
)

// crashRelease is one bundle of the crash test's sequence.
type crashRelease struct {
	release    uint64
	dir        string // manifest.pb + chunks/
	badGolden  bool   // fails its golden check: never switched to
	killPlugin bool   // the driver kills the plugin on probation: rolled back
}

// chunkFiles is a chunk sink writing files named by hash.
type chunkFiles string

func (d chunkFiles) PutChunk(sum [32]byte, data []byte) error {
	return os.WriteFile(filepath.Join(string(d), fmt.Sprintf("%x", sum)), data, 0o644)
}

// crashReleases is the crash test's sequence of releases, each built when
// first needed (a run uses a third of what it may).
type crashReleases struct {
	t    *testing.T
	rels []*crashRelease
}

func newCrashReleases(t *testing.T, n int) *crashReleases {
	return &crashReleases{t: t, rels: make([]*crashRelease, n)}
}

func (c *crashReleases) len() int { return len(c.rels) }

// at is release i+1.
func (c *crashReleases) at(i int) crashRelease {
	if c.rels[i] == nil {
		c.rels[i] = c.build(i + 1)
	}
	return *c.rels[i]
}

func (c *crashReleases) build(i int) *crashRelease {
	t := c.t
	r := &crashRelease{release: uint64(i), dir: t.TempDir(), badGolden: i%4 == 3, killPlugin: i%4 == 0}
	cs := chunks{}
	var raw []byte
	if r.badGolden {
		raw = digitsRelease(t, cs, i, `duration = "1s"`, `duration = "0s"`, `file = "golden/probabilities.json"`, `values = [`+strings.Repeat("0.5,", 39)+`0.5]`)
	} else {
		raw = digitsRelease(t, cs, i, `duration = "1s"`, `duration = "0s"`)
	}
	os.MkdirAll(filepath.Join(r.dir, "chunks"), 0o755)
	for sum, data := range cs {
		if err := chunkFiles(filepath.Join(r.dir, "chunks")).PutChunk(sum, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(r.dir, "manifest.pb"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// driverRun is what one run of the driver printed and how it ended.
type driverRun struct {
	killed   bool
	lines    map[string][]string // first word → the rest, per line
	stderr   string
	duration time.Duration
}

func (r driverRun) first(word string) []string {
	if ls := r.lines[word]; len(ls) > 0 {
		return strings.Fields(ls[0])
	}
	return nil
}

// TestCrashSafety kills the lifecycle driver (real SQLite, real ONNX
// plugin) with SIGKILL at every journaled step and at seeded random
// moments, at least 50 times, and checks every restart: the active
// release is the old or the new one (never one that failed its golden
// check), whole — it answers the digits rows with the reference outputs —,
// exactly one plugin process runs (orphans of the killed run are
// reaped), runs that finish end idle (never stuck in progress), and at
// the end no plugin process is left.
func TestCrashSafety(t *testing.T) {
	t.Parallel() // its work is in other processes; the tests that wait on probation run beside it
	lib := ortLib(t)
	const minKills = 50
	budget := 150 * time.Second
	data := t.TempDir()
	marker := reap.Marker(data)
	t.Cleanup(func() { reap.Orphans(marker, 5*time.Second) })
	rels := newCrashReleases(t, 150)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FLOTILLA_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (FLOTILLA_CRASH_SEED to repeat)", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	run := func(r crashRelease, crashAt string, killAfter time.Duration) driverRun {
		args := []string{"-data", data, "-plugins", pluginDir, "-bundle", r.dir, "-rows", "testdata/digits/rows.json", "-probation", "200ms"}
		if r.killPlugin {
			args = append(args, "-kill-plugin")
		}
		cmd := exec.Command(driverBin, args...)
		cmd.Env = append(os.Environ(), "FLOTILLA_ORT_LIB="+lib, "FLOTILLA_CRASH_AT="+crashAt)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if killAfter > 0 {
			timer := time.AfterFunc(killAfter, func() { cmd.Process.Signal(syscall.SIGKILL) })
			defer timer.Stop()
		}
		err := cmd.Wait()
		res := driverRun{lines: map[string][]string{}, stderr: stderr.String(), duration: time.Since(start)}
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
				res.killed = true
			} else {
				t.Fatalf("driver failed: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
			}
		} else if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(&stdout)
		for sc.Scan() {
			word, rest, _ := strings.Cut(sc.Text(), " ")
			res.lines[word] = append(res.lines[word], rest)
		}
		return res
	}

	var (
		idx        int    // the release desired now
		committed  uint64 // the last release a run ended on
		allowed    = map[uint64]bool{0: true}
		stepKills  = map[string]int{}
		kills      int
		lastKilled bool
		runs       int
		deadline   = time.Now().Add(budget)
	)
	allowed[rels.at(0).release] = true
	for kills < minKills || len(stepKills) < len(Steps) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %d kills, steps killed at %v (want all of %v)", budget, kills, stepKills, Steps)
		}
		if idx+1 >= rels.len() {
			t.Fatalf("used up %d releases after %d runs, %d kills", rels.len(), runs, kills)
		}
		r := rels.at(idx)
		crashAt, killAfter := "", time.Duration(0)
		if runs%2 == 0 { // alternate: a journaled step, then a random moment
			possible := slices.DeleteFunc(slices.Clone(Steps), func(s string) bool { return !canHappen(s, r, lastKilled) })
			missing := slices.DeleteFunc(slices.Clone(possible), func(s string) bool { return stepKills[s] > 0 })
			if len(missing) == 0 {
				missing = possible
			}
			crashAt = missing[rng.IntN(len(missing))]
		} else {
			killAfter = time.Duration(rng.Int64N(int64(600 * time.Millisecond)))
		}
		res := run(r, crashAt, killAfter)
		runs++

		// Every run that got as far as starting checks what it found.
		if f := res.first("PLUGINS"); f != nil && f[0] != "1" {
			t.Fatalf("run %d: %s plugin processes after reaping, want 1", runs, f[0])
		}
		if f := res.first("START"); f != nil {
			active, _ := strconv.ParseUint(f[0], 10, 64)
			if !allowed[active] {
				t.Fatalf("run %d: active release %d, want one of %v", runs, active, allowed)
			}
			if active != 0 && (rels.at(int(active) - 1).badGolden) {
				t.Fatalf("run %d: release %d failed its golden check yet is active", runs, active)
			}
			if active != 0 && res.first("INFER") == nil && !res.killed {
				t.Fatalf("run %d: release %d active but no inference checked\n%s", runs, active, res.stderr)
			}
			if inf := res.first("INFER"); inf != nil && inf[1] != f[0] {
				t.Fatalf("run %d: inference served by %s, active %s", runs, inf[1], f[0])
			}
		}
		lastKilled = res.killed
		if res.killed {
			kills++
			if crashAt != "" {
				stepKills[crashAt]++
			}
			inFlight := crashAt == StepStaged || crashAt == StepLoading || crashAt == StepSwitched
			if rng.IntN(8) == 0 || inFlight && rng.IntN(2) == 0 { // a newer release is desired while one may be in flight
				idx++
				allowed[rels.at(idx).release] = true
			}
			continue
		}
		// A run that finished ended idle: on the desired release, or for a
		// bad one on a release allowed before it.
		end := res.first("END")
		if end == nil {
			t.Fatalf("run %d: finished without END: %v\n%s", runs, res.lines, res.stderr)
		}
		got, _ := strconv.ParseUint(end[0], 10, 64)
		rejected := res.lines["REJECTED"] != nil
		switch {
		case !allowed[got] || got != 0 && rels.at(int(got)-1).badGolden:
			t.Fatalf("run %d: ended on %d for desired %+v (allowed %v)", runs, got, r, allowed)
		case r.killPlugin && got == r.release && !startedOn(res, r.release):
			// (a restart on probation may find its time already up)
			t.Fatalf("run %d: release %d survived a plugin crash on probation", runs, got)
		case !r.badGolden && !r.killPlugin && got != r.release &&
			!(rejected && strings.Contains(res.lines["REJECTED"][0], "interrupted")):
			t.Fatalf("run %d: good release %d not active at the end (%d): %v", runs, r.release, got, res.lines)
		}
		committed = got
		idx++
		allowed = map[uint64]bool{committed: true, rels.at(idx).release: true}
	}
	// Converge: one clean run, then nothing left running.
	res := run(rels.at(idx), "", 0)
	if res.killed || res.first("END") == nil {
		t.Fatalf("final run: %v\n%s", res.lines, res.stderr)
	}
	// The driver has exited; a plugin it stopped may still be between its
	// kill and its exit for a moment. One still there after 5 s is orphaned.
	var left []int
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if left, _ = reap.Find(marker); len(left) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(left) != 0 {
		t.Errorf("plugin processes left after the last run: %v", left)
	}
	t.Logf("%d runs, %d kills (by step %v)", runs+1, kills, stepKills)
}

// canHappen says whether a run installing r can reach step.
func canHappen(step string, r crashRelease, afterKill bool) bool {
	switch step {
	case StepRejected:
		return r.badGolden
	case StepRolledBack:
		return r.killPlugin
	case StepCommitted:
		return !r.badGolden && !r.killPlugin
	case StepChecked, StepSwitched:
		return !r.badGolden
	case StepSuperseded:
		return afterKill
	}
	return true
}

// startedOn says whether the run found release active when it started.
func startedOn(res driverRun, release uint64) bool {
	f := res.first("START")
	return f != nil && f[0] == strconv.FormatUint(release, 10)
}
