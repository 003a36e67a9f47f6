// Package exepages gives back to the kernel the page-table entries of the
// process's own executable that start-up touched and the running agent no
// longer uses.
//
// Why: Linux maps file pages "around" each one a process touches (fault
// around, 64 KiB by default), and a Go program's start-up — some 200
// package initialisers spread over the whole text, the runtime's type and
// itab set-up, TLS, SQLite and MQTT set-up — touches almost every 64 KiB
// block of the image once. Those mappings then stay for the life of the
// process: measured on the agent, 166 of the 186 text blocks and 10 of its
// 12.6 MB of read-only data stayed mapped (21 MB of RssFile) while idle it
// maps again about 5 MB of text and 3–8 MB of read-only data (the GC's
// stack scans read the pclntab). docs/benchmarks.md has the figures.
//
// Release drops those entries with madvise(MADV_DONTNEED) on the
// executable's read-only private mappings. Nothing is lost: such a mapping
// holds only the file's own clean pages, which stay in the page cache; a
// page the agent touches again comes back by a minor fault. The pages the
// process no longer maps become ordinary page cache the kernel may reclaim,
// rather than mapped executable pages it protects, and the process's RSS
// says what it uses.
//
// A mapping is released only when it is the executable's (same device and
// inode), private, not writable, not locked, and holds no anonymous pages:
// a relocated read-only segment of a dynamically linked build (RELRO) has
// anonymous copy-on-write pages, and dropping those would undo its
// relocations.
package exepages

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Mapping is one mapping of /proc/PID/smaps, the fields Release decides on.
type Mapping struct {
	Start, End   uintptr
	Perms        string // "r-xp"
	Major, Minor uint32 // device of the mapped file
	Inode        uint64
	Path         string
	RssKB        int64
	AnonymousKB  int64
	Locked       bool // VmFlags has "lo"
}

// Releasable reports whether m is a mapping of the file (major, minor,
// inode) whose resident pages can be dropped without losing anything.
func (m Mapping) Releasable(major, minor uint32, inode uint64) bool {
	return inode != 0 && m.Inode == inode && m.Major == major && m.Minor == minor &&
		len(m.Perms) == 4 && m.Perms[0] == 'r' && m.Perms[1] != 'w' && m.Perms[3] == 'p' &&
		m.AnonymousKB == 0 && !m.Locked && m.RssKB > 0
}

// maxSmaps bounds what ParseSmaps reads: the agent's smaps is about 50 KB.
const maxSmaps = 16 << 20

// ParseSmaps reads /proc/PID/smaps.
func ParseSmaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(io.LimitReader(r, maxSmaps))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if k, v, ok := strings.Cut(line, ":"); ok && !strings.Contains(k, " ") && !strings.Contains(k, "-") {
			if len(out) == 0 {
				return nil, fmt.Errorf("smaps: field %q before any mapping", k)
			}
			m := &out[len(out)-1]
			switch k {
			case "Rss", "Anonymous":
				n, err := kB(v)
				if err != nil {
					return nil, fmt.Errorf("smaps: %s: %w", k, err)
				}
				if k == "Rss" {
					m.RssKB = n
				} else {
					m.AnonymousKB = n
				}
			case "VmFlags":
				for _, f := range strings.Fields(v) {
					if f == "lo" {
						m.Locked = true
					}
				}
			}
			continue
		}
		m, err := parseHeader(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("smaps: %w", err)
	}
	return out, nil
}

// parseHeader parses "start-end perms offset major:minor inode [path]".
func parseHeader(line string) (Mapping, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return Mapping{}, fmt.Errorf("smaps: bad mapping line %q", line)
	}
	var m Mapping
	lo, hi, ok := strings.Cut(f[0], "-")
	start, err1 := strconv.ParseUint(lo, 16, 64)
	end, err2 := strconv.ParseUint(hi, 16, 64)
	if !ok || err1 != nil || err2 != nil || end < start {
		return Mapping{}, fmt.Errorf("smaps: bad range in %q", line)
	}
	m.Start, m.End, m.Perms = uintptr(start), uintptr(end), f[1]
	maj, min, ok := strings.Cut(f[3], ":")
	major, err1 := strconv.ParseUint(maj, 16, 32)
	minor, err2 := strconv.ParseUint(min, 16, 32)
	inode, err3 := strconv.ParseUint(f[4], 10, 64)
	if !ok || err1 != nil || err2 != nil || err3 != nil {
		return Mapping{}, fmt.Errorf("smaps: bad device or inode in %q", line)
	}
	m.Major, m.Minor, m.Inode = uint32(major), uint32(minor), inode
	if len(f) > 5 {
		m.Path = strings.Join(f[5:], " ")
	}
	return m, nil
}

func kB(v string) (int64, error) {
	f := strings.Fields(v)
	if len(f) != 2 || f[1] != "kB" {
		return 0, fmt.Errorf("not a kB figure: %q", v)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

// Report says what one Release did.
type Report struct {
	Mappings   int   // executable mappings released
	ReleasedKB int64 // resident in them before
}

// ErrUnsupported is returned where the platform has no such mappings to
// release (not Linux).
var ErrUnsupported = errors.New("exepages: not supported on this platform")

// Release drops the resident pages of the running executable's read-only
// mappings from this process's page tables.
func Release() (Report, error) {
	major, minor, inode, err := exeFile()
	if err != nil {
		return Report{}, err
	}
	b, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return Report{}, fmt.Errorf("exepages: %w", err)
	}
	maps, err := ParseSmaps(bytes.NewReader(b))
	if err != nil {
		return Report{}, fmt.Errorf("exepages: %w", err)
	}
	var r Report
	for _, m := range maps {
		if !m.Releasable(major, minor, inode) {
			continue
		}
		if err := dontNeed(m.Start, m.End-m.Start); err != nil {
			return r, fmt.Errorf("exepages: %s %x-%x: %w", m.Perms, m.Start, m.End, err)
		}
		r.Mappings++
		r.ReleasedKB += m.RssKB
	}
	return r, nil
}

// Loop releases the executable's pages after first, then every every
// (0 = only once), until ctx ends; first lets start-up finish (enrolment,
// the first connection), every gives back what rare work (a bundle
// install, a diagnostics command) touched since. Failures are logged once
// and end the loop: they do not change.
func Loop(ctx context.Context, first, every time.Duration, log *slog.Logger) {
	wait := first
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		r, err := Release()
		if err != nil {
			if !errors.Is(err, ErrUnsupported) {
				log.Warn("executable pages not released", "err", err)
			}
			return
		}
		log.Debug("executable pages released", "mappings", r.Mappings, "kb", r.ReleasedKB)
		if every <= 0 {
			return
		}
		wait = every
	}
}
