// Command flotilla-benchreport runs the paired benchmarks declared in package
// benchreport and writes their figures into docs/benchmarks.md between the
// `make bench` markers (or to stdout with -stdout). `make bench` calls it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/benchreport"
)

func main() {
	count := flag.Int("count", 3, "go test -count for each comparison")
	doc := flag.String("doc", "docs/benchmarks.md", "markdown file whose generated section is replaced")
	stdout := flag.Bool("stdout", false, "print the section to stdout instead of editing -doc")
	only := flag.String("only", "", "run only the comparisons whose name matches this regular expression")
	goBin := flag.String("go", "go", "go command")
	benchtime := flag.String("benchtime", "", "override every comparison's -benchtime (e.g. 1x for a smoke run)")
	flag.Parse()
	if err := run(*count, *doc, *stdout, *only, *goBin, *benchtime); err != nil {
		fmt.Fprintln(os.Stderr, "flotilla-benchreport:", err)
		os.Exit(1)
	}
}

func run(count int, doc string, toStdout bool, only, goBin, benchtime string) error {
	if count < 1 {
		return fmt.Errorf("-count must be at least 1")
	}
	sel, err := regexp.Compile(only)
	if err != nil {
		return fmt.Errorf("-only: %w", err)
	}
	var original []byte
	if !toStdout {
		// Fail before measuring anything if the file cannot be spliced.
		if original, err = os.ReadFile(doc); err != nil {
			return err
		}
		if _, err := benchreport.Splice(original, nil); err != nil {
			return fmt.Errorf("%s: %w", doc, err)
		}
	}
	invocation := "flotilla-benchreport -count " + fmt.Sprint(count)
	if only != "" {
		invocation += " -only '" + only + "'"
	}
	if benchtime != "" {
		invocation += " -benchtime " + benchtime
	}
	m := benchreport.Machine{
		Cores:      runtime.NumCPU(),
		MemTotal:   benchreport.MemTotal(readProc("/proc/meminfo")),
		LoadBefore: benchreport.LoadAvg(readProc("/proc/loadavg")),
		GOOS:       runtime.GOOS,
		Arch:       runtime.GOARCH,
		GoVersion:  goVersion(goBin),
		Date:       time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		Invocation: invocation,
	}
	var rows []benchreport.Row
	for _, c := range benchreport.Comparisons {
		if !sel.MatchString(c.Name) {
			continue
		}
		if benchtime != "" {
			c.Benchtime = benchtime
		}
		fmt.Fprintf(os.Stderr, "== %s: %s\n", c.Name, c.Command(count))
		var out bytes.Buffer
		cmd := exec.Command(goBin, c.Args(count)...)
		cmd.Stdout = io.MultiWriter(&out, os.Stderr)
		cmd.Stderr = os.Stderr
		runErr := cmd.Run()
		s, perr := benchreport.Parse(&out)
		row := benchreport.Compute(c, count, s)
		if s != nil {
			m.Malformed += s.Malformed
		}
		switch {
		case runErr != nil && row.Err == "":
			row.Err = "go test: " + runErr.Error() // figures parsed, but the run failed: do not trust them
		case runErr != nil:
			row.Err = "go test: " + runErr.Error() + "; " + row.Err
		case perr != nil:
			row.Err = perr.Error()
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return fmt.Errorf("no comparison matches -only %q", only)
	}
	m.LoadAfter = benchreport.LoadAvg(readProc("/proc/loadavg"))
	var section bytes.Buffer
	if err := benchreport.Render(&section, m, rows); err != nil {
		return err
	}
	if toStdout {
		_, err := os.Stdout.Write(section.Bytes())
		return err
	}
	updated, err := benchreport.Splice(original, section.Bytes())
	if err != nil {
		return fmt.Errorf("%s: %w", doc, err)
	}
	fi, err := os.Stat(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(doc, updated, fi.Mode().Perm())
}

func readProc(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return b
}

func goVersion(goBin string) string {
	out, err := exec.Command(goBin, "env", "GOVERSION").Output()
	if err != nil {
		return runtime.Version()
	}
	return strings.TrimSpace(string(out))
}
