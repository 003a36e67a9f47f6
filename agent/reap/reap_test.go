package reap

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// TestOrphansKillsOnlyMarked starts two sleeping processes, one with this
// data folder's marker and one with another's: only the first is killed.
func TestOrphansKillsOnlyMarked(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc") // only Linux devices run the agent's plugins
	}
	mine, theirs := Marker(t.TempDir()), Marker(t.TempDir())
	if same := Marker(filepath.Join(os.TempDir(), "x")); mine == theirs || same != Marker(os.TempDir()+"/./x") {
		t.Fatalf("markers: %q %q", mine, theirs)
	}
	start := func(marker string) *exec.Cmd {
		c := exec.Command("sleep", "30")
		c.Env = append(os.Environ(), marker)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	a, b := start(mine), start(theirs)
	waited := make(chan error, 1)
	go func() { waited <- a.Wait() }() // reap it, as init would for an orphan
	pids, err := Find(mine)
	if err != nil || !slices.Equal(pids, []int{a.Process.Pid}) {
		t.Fatalf("Find = %v, %v; want [%d]", pids, err, a.Process.Pid)
	}
	killed, err := Orphans(mine, 5*time.Second)
	if err != nil || !slices.Equal(killed, []int{a.Process.Pid}) {
		t.Fatalf("Orphans = %v, %v", killed, err)
	}
	if err := <-waited; err == nil {
		t.Error("the marked process exited cleanly; it was not killed")
	}
	if left, _ := Find(theirs); !slices.Equal(left, []int{b.Process.Pid}) {
		t.Errorf("the other agent's process was touched: %v", left)
	}
	if again, err := Orphans(mine, time.Second); err != nil || len(again) != 0 {
		t.Errorf("second Orphans = %v, %v", again, err)
	}
}
