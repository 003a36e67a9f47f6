package selfupdate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"time"
)

// ErrCheckFailed reports a staged binary that failed its test run.
var ErrCheckFailed = errors.New("selfupdate: the new binary failed its test run")

// checkTimeout bounds a test run; maxCheckOutput caps what is read of it.
const (
	checkTimeout   = 10 * time.Second
	maxCheckOutput = 4 << 10
)

// VersionCheck is an Updater.Check: it runs `binary version` and wants it
// to exit 0 within 10 s naming version ("flotilla-agent VERSION ..."). A
// binary for another architecture, a truncated file, one that crashes or
// hangs at start, or a build of another version fails before the agent
// restarts into it.
func VersionCheck(binary, version string) error {
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "version")
	// Marked as a slot binary: it must never launch another.
	cmd.Env = append(os.Environ(), SlotEnv+"=check")
	var out capped
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	err := cmd.Run()
	text := strings.TrimSpace(out.String())
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("`%s version` did not finish within %s", BinaryName, checkTimeout)
	case err != nil:
		return fmt.Errorf("`%s version`: %w: %.200s", BinaryName, err, text)
	case !strings.HasPrefix(text, BinaryName+" "+version+" ") && text != BinaryName+" "+version:
		return fmt.Errorf("`%s version` says %.200q, not version %s", BinaryName, text, version)
	}
	return nil
}

// capped keeps the first maxCheckOutput bytes written to it.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxCheckOutput - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
