package selfupdate_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/firmware/selfupdate"
)

// TestStageTestRunsTheBinary: with VersionCheck, a staged binary is run
// (`version`) before it becomes active: one that names the version staged
// becomes the pending slot; one that fails, names another version or is
// not an executable at all is removed, leaves the active slot as it was,
// and is recorded as rejected with why. Real processes (shell scripts).
func TestStageTestRunsTheBinary(t *testing.T) {
	script := func(body string) *strings.Reader { return strings.NewReader("#!/bin/sh\n" + body + "\n") }
	for _, c := range []struct {
		name, body, version, want string
	}{
		{"crashes", "echo 'panic: boom' >&2; exit 2", "2.0", "exit status 2"},
		{"another version", "echo 'flotilla-agent 1.9 (protocol 3)'", "2.0", "not version 2.0"},
		{"prefix of the version", "echo 'flotilla-agent 2.0.1 (protocol 3)'", "2.0", "not version 2.0"},
		{"not executable", "\x7fELF\x02garbage", "2.0", "version"},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := selfupdate.New(t.TempDir())
			up.Check = selfupdate.VersionCheck
			src := script(c.body)
			if c.name == "not executable" {
				src = strings.NewReader(c.body)
			}
			_, err := up.Stage(src, 1<<20, "flotilla-agent", c.version, time.Minute)
			if !errors.Is(err, selfupdate.ErrCheckFailed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("stage: %v, want a failed check mentioning %q", err, c.want)
			}
			st, err := up.State()
			if err != nil || st.Pending || st.Active != "" || st.RejectedVersion != c.version || !strings.Contains(st.RejectedReason, "test run failed") {
				t.Fatalf("state after a failed check: %+v %v", st, err)
			}
			if _, err := os.Stat(up.BinaryPath("a")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the failed binary was kept: %v", err)
			}
		})
	}
	up := selfupdate.New(t.TempDir())
	up.Check = selfupdate.VersionCheck
	slot, err := up.Stage(script(`[ "$1" = version ] && [ -n "$`+selfupdate.SlotEnv+`" ] && echo 'flotilla-agent 2.0 (protocol 3)'`), 1<<20, "flotilla-agent", "2.0", time.Minute)
	if err != nil || slot != "a" {
		t.Fatalf("stage a good binary: %q %v", slot, err)
	}
	if st, _ := up.State(); !st.Pending || st.Active != "a" || st.ActiveVersion != "2.0" {
		t.Fatalf("state: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(up.Dir, "a", selfupdate.BinaryName)); err != nil {
		t.Fatal(err)
	}
}
