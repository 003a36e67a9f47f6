// Package reap ends the runtime plugin processes an earlier run of the
// agent left behind when it died without closing them (kill -9, an OOM
// kill, a crash): go-plugin children outlive a killed parent.
//
// Every plugin the agent starts carries a marker in its environment
// (Marker: FLOTILLA_AGENT_INSTANCE=<hash of the data folder>), so the
// processes of this agent's installation are told apart from anything
// else, including another agent on the same machine. On start, before it
// starts its own plugins, the agent calls Orphans: every live process
// with the marker is an orphan, and is killed. Reading a process's
// environment needs /proc and the same user; elsewhere Orphans finds
// nothing.
package reap

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Var is the environment variable that carries the marker.
const Var = "FLOTILLA_AGENT_INSTANCE"

// Marker is the environment entry to give every plugin started for the
// agent whose data folder is dataDir.
func Marker(dataDir string) string {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		abs = dataDir
	}
	sum := sha256.Sum256([]byte(abs))
	return Var + "=" + hex.EncodeToString(sum[:8])
}

// procDir is where processes are listed; a variable for tests.
var procDir = "/proc"

// Find lists the live processes (not zombies, not this one) whose
// environment holds marker exactly.
func Find(marker string) ([]int, error) {
	ents, err := os.ReadDir(procDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reap: %w", err)
	}
	want := []byte(marker)
	self := os.Getpid()
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join(procDir, e.Name(), "environ"))
		if err != nil || len(env) == 0 { // gone, another user's, or a zombie
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if bytes.Equal(kv, want) {
				if !zombie(pid) {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out, nil
}

func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join(procDir, strconv.Itoa(pid), "stat"))
	if err != nil {
		return true
	}
	// pid (comm) state …: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}

// Orphans kills every process with marker and waits up to wait for them
// to die; it returns the pids it killed.
func Orphans(marker string, wait time.Duration) ([]int, error) {
	pids, err := Find(marker)
	if err != nil || len(pids) == 0 {
		return nil, err
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(wait)
	for {
		left, err := Find(marker)
		if err != nil {
			return pids, err
		}
		if len(left) == 0 {
			return pids, nil
		}
		if time.Now().After(deadline) {
			return pids, fmt.Errorf("reap: processes %v still alive after SIGKILL", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
