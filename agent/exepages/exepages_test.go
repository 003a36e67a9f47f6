package exepages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A recorded smaps of a flotilla-agent (fields cut down), with mappings
// added that must never be released: the data segment, a read-only
// segment holding copy-on-write pages (RELRO of a dynamic build), a locked
// one, another file, the same inode on another device, and the heap.
const recorded = `00400000-00f92000 r-xp 00000000 fe:00 10117311                           /opt/flotilla/flotilla-agent
Size:              11848 kB
Rss:               10568 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00f92000-01bed000 r--p 00b92000 fe:00 10117311                           /opt/flotilla/flotilla-agent
Size:              12652 kB
Rss:                7916 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
01bed000-01c8b000 rw-p 017ed000 fe:00 10117311                           /opt/flotilla/flotilla-agent
Size:                632 kB
Rss:                 632 kB
Anonymous:           120 kB
VmFlags: rd wr mr mw me ac
01c8b000-01c8c000 r--p 0188b000 fe:00 10117311                           /opt/flotilla/flotilla-agent (deleted)
Size:                  4 kB
Rss:                   4 kB
Anonymous:             4 kB
VmFlags: rd mr mw me ac
01c8c000-01c8d000 r--p 0188c000 fe:00 10117311                           /opt/flotilla/flotilla-agent
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
VmFlags: rd mr mw me lo
01c8d000-01c8e000 r--p 0188d000 fe:00 10117311                           /opt/flotilla/flotilla-agent
Size:                  4 kB
Rss:                   0 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
01c8e000-03cda000 rw-p 00000000 00:00 0 
Size:              33072 kB
Rss:                 172 kB
Anonymous:           172 kB
VmFlags: rd wr mr mw me ac
7f1082202000-7f108220a000 rw-s 00000000 fe:00 9995873                    /var/lib/flotilla/agent.db-shm
Size:                 32 kB
Rss:                  32 kB
Anonymous:             0 kB
VmFlags: rd wr sh mr mw me ms
7f1082300000-7f1082310000 r--p 00000000 fe:00 9995874                    /usr/lib/libother.so
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
7f1082400000-7f1082410000 r-xp 00000000 fe:01 10117311                   /mnt/other/same-inode
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
`

func TestReleasableOnlyCleanReadOnlyMappingsOfTheExecutable(t *testing.T) {
	maps, err := ParseSmaps(strings.NewReader(recorded))
	if err != nil {
		t.Fatal(err)
	}
	if len(maps) != 10 {
		t.Fatalf("parsed %d mappings, want 10", len(maps))
	}
	var got []string
	for _, m := range maps {
		if m.Releasable(0xfe, 0, 10117311) {
			got = append(got, m.Perms+" "+m.Path)
		}
	}
	want := []string{"r-xp /opt/flotilla/flotilla-agent", "r--p /opt/flotilla/flotilla-agent"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("releasable:\n got %q\nwant %q", got, want)
	}
	if m := maps[0]; m.Start != 0x400000 || m.End != 0xf92000 || m.RssKB != 10568 {
		t.Errorf("first mapping parsed as %+v", m)
	}
	if !maps[4].Locked || maps[2].AnonymousKB != 120 || maps[3].Path != "/opt/flotilla/flotilla-agent (deleted)" {
		t.Errorf("fields misread: %+v %+v %+v", maps[4], maps[2], maps[3])
	}
}

func TestParseSmapsRejectsGarbage(t *testing.T) {
	for name, in := range map[string]string{
		"field first":   "Rss: 4 kB\n",
		"bad range":     "zz-00400000 r-xp 00000000 fe:00 1 /x\n",
		"reversed":      "00500000-00400000 r-xp 00000000 fe:00 1 /x\n",
		"short header":  "00400000-00500000 r-xp 00000000\n",
		"bad device":    "00400000-00500000 r-xp 00000000 fe 1 /x\n",
		"bad rss":       "00400000-00500000 r-xp 00000000 fe:00 1 /x\nRss: many kB\n",
		"rss not in kB": "00400000-00500000 r-xp 00000000 fe:00 1 /x\nRss: 4 MB\n",
	} {
		if _, err := ParseSmaps(strings.NewReader(in)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestReleaseOnItself releases the test binary's own pages and checks
// that they left the page tables and that the program still runs right
// afterwards (code, read-only tables, the pclntab for stack traces).
func TestReleaseOnItself(t *testing.T) {
	if runtime.GOOS != "linux" {
		if _, err := Release(); err != ErrUnsupported {
			t.Fatalf("Release on %s: %v, want ErrUnsupported", runtime.GOOS, err)
		}
		return
	}
	before := exeRSS(t)
	r, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if r.Mappings < 2 || r.ReleasedKB < 1024 {
		t.Fatalf("released %+v: want the text and read-only data, over 1 MB", r)
	}
	after := exeRSS(t)
	// Reading smaps again faults some pages back in: the drop, not zero.
	if after > before*3/4 {
		t.Errorf("executable resident %d kB before, %d kB after release: not released", before, after)
	}
	sum := sha256.Sum256([]byte("abc"))
	if got := hex.EncodeToString(sum[:]); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("sha256 after release: %s", got)
	}
	buf := make([]byte, 1<<16)
	if st := string(buf[:runtime.Stack(buf, false)]); !strings.Contains(st, "TestReleaseOnItself") {
		t.Errorf("stack trace after release lacks the test function:\n%s", st)
	}
	if data := exeData(t); data == 0 {
		t.Error("the executable's data segment is gone from the page tables")
	}
}

// exeRSS is the resident kB of the test binary's read-only mappings.
func exeRSS(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, m := range selfMaps(t) {
		if m.Perms[1] != 'w' {
			n += m.RssKB
		}
	}
	return n
}

// exeData is the resident kB of the test binary's writable mappings.
func exeData(t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, m := range selfMaps(t) {
		if m.Perms[1] == 'w' {
			n += m.RssKB
		}
	}
	return n
}

func selfMaps(t *testing.T) []Mapping {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	maps, err := ParseSmaps(f)
	if err != nil {
		t.Fatal(err)
	}
	major, minor, inode, err := exeFile()
	if err != nil {
		t.Fatal(err)
	}
	var out []Mapping
	for _, m := range maps {
		if m.Inode == inode && m.Major == major && m.Minor == minor {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatal("no mapping of the test binary in /proc/self/smaps")
	}
	return out
}

func TestLoopReleasesOnceAndStopsWithTheContext(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	done := make(chan struct{})
	go func() { defer close(done); Loop(context.Background(), 0, 0, log) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Loop with every = 0 did not return after its one release")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done = make(chan struct{})
	go func() { defer close(done); Loop(ctx, time.Millisecond, time.Millisecond, log) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Loop did not stop when its context ended")
	}
}
