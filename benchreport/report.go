// Package benchreport runs the project's paired benchmarks and writes their
// figures into docs/benchmarks.md: for each declared comparison it runs one
// `go test -bench` invocation that measures the baseline and ours side by side,
// parses the standard benchmark output (custom metrics included), takes the
// medians and the ratio ours/baseline, and renders a markdown section with the
// machine, its load and the exact command, spliced between fixed markers so the
// hand-written rest of the file stays byte-identical.
package benchreport

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/perf/benchfmt"
)

// Comparison declares one paired measurement: two rows of one benchmark run.
type Comparison struct {
	Name      string // short identifier, used by the -only flag
	Pkg       string // package pattern given to go test
	Bench     string // -bench regular expression selecting both rows
	Benchtime string // -benchtime, empty for go test's default
	Baseline  string // full sub-benchmark name of the baseline row, without the -GOMAXPROCS suffix
	Ours      string // full sub-benchmark name of our row
	Metric    string // unit as printed by go test: ns/op, B/op, p50-µs, summaries/s ...
	Higher    bool   // a higher value of Metric is better
	Note      string // one line saying what is compared
}

// Args is the go test argument list (after "go") that measures c count times.
func (c Comparison) Args(count int) []string {
	args := []string{"test", "-run", "^$", "-bench", c.Bench, "-benchmem", "-count", strconv.Itoa(count)}
	if c.Benchtime != "" {
		args = append(args, "-benchtime", c.Benchtime)
	}
	return append(args, c.Pkg)
}

// Command is Args as a shell command line a reader can paste.
func (c Comparison) Command(count int) string {
	parts := []string{"go"}
	for _, a := range c.Args(count) {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// MaxOutput bounds the benchmark output Parse reads.
const MaxOutput = 64 << 20

// Samples holds the values parsed from benchmark output, by benchmark name
// (GOMAXPROCS suffix removed) and then by unit as printed.
type Samples struct {
	Values    map[string]map[string][]float64
	Procs     map[string]string // GOMAXPROCS suffix seen per name, "" if none
	Malformed int               // benchmark lines that did not parse, ignored
}

// Parse reads standard `go test -bench` output. Lines that are not benchmark
// results are ignored; malformed benchmark lines are counted and ignored. It
// fails only if the input cannot be read or exceeds MaxOutput.
func Parse(r io.Reader) (*Samples, error) {
	lr := &io.LimitedReader{R: r, N: MaxOutput + 1}
	s := &Samples{Values: map[string]map[string][]float64{}, Procs: map[string]string{}}
	br := benchfmt.NewReader(lr, "bench")
	for br.Scan() {
		switch rec := br.Result().(type) {
		case *benchfmt.SyntaxError:
			s.Malformed++
		case *benchfmt.Result:
			// benchfmt drops the "Benchmark" prefix; the table names rows as go test prints them.
			name, procs := splitProcs("Benchmark" + rec.Name.String())
			s.Procs[name] = procs
			units := s.Values[name]
			if units == nil {
				units = map[string][]float64{}
				s.Values[name] = units
			}
			for _, v := range rec.Values {
				unit, val := v.Unit, v.Value
				if v.OrigUnit != "" {
					unit, val = v.OrigUnit, v.OrigValue
				}
				units[unit] = append(units[unit], val)
			}
		}
	}
	if err := br.Err(); err != nil {
		return s, fmt.Errorf("benchmark output: %w", err)
	}
	if lr.N <= 0 {
		return s, fmt.Errorf("benchmark output exceeds %d bytes", MaxOutput)
	}
	return s, nil
}

// splitProcs removes the "-N" GOMAXPROCS suffix go test appends to a name.
func splitProcs(name string) (string, string) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 || i == len(name)-1 {
		return name, ""
	}
	for _, c := range name[i+1:] {
		if c < '0' || c > '9' {
			return name, ""
		}
	}
	return name[:i], name[i+1:]
}

// Median is the middle value of xs (the mean of the two middle ones for an
// even count); NaN for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Row is one comparison's outcome.
type Row struct {
	Comparison
	Count          int
	Command        string
	BaselineValues []float64 // the baseline row's values of Metric, one a run
	OursValues     []float64
	BaselineMedian float64
	OursMedian     float64
	Ratio          float64 // OursMedian / BaselineMedian
	Err            string  // why there are no figures, if there are none
}

// Compute takes the medians of both rows of c from s and their ratio.
func Compute(c Comparison, count int, s *Samples) Row {
	r := Row{Comparison: c, Count: count, Command: c.Command(count)}
	if s != nil {
		r.BaselineValues = s.Values[c.Baseline][c.Metric]
		r.OursValues = s.Values[c.Ours][c.Metric]
	}
	switch {
	case len(r.BaselineValues) == 0:
		r.Err = fmt.Sprintf("no %s for %s in the output", c.Metric, c.Baseline)
	case len(r.OursValues) == 0:
		r.Err = fmt.Sprintf("no %s for %s in the output", c.Metric, c.Ours)
	}
	if r.Err != "" {
		return r
	}
	r.BaselineMedian, r.OursMedian = Median(r.BaselineValues), Median(r.OursValues)
	if r.BaselineMedian == 0 {
		r.Err = "baseline median is 0, no ratio"
		return r
	}
	r.Ratio = r.OursMedian / r.BaselineMedian
	return r
}

// Machine describes where the figures were measured.
type Machine struct {
	Cores      int
	MemTotal   string // from /proc/meminfo, e.g. "7.8 GiB"
	LoadBefore string // /proc/loadavg's three averages before the runs
	LoadAfter  string // and after
	GoVersion  string
	GOOS, Arch string
	Date       string // UTC, when the runs began
	Invocation string // how the report was produced
	Malformed  int    // malformed benchmark lines ignored, all runs
}

// MemTotal reads MemTotal from /proc/meminfo contents.
func MemTotal(meminfo []byte) string {
	for line := range bytes.Lines(meminfo) {
		f := strings.Fields(string(line))
		if len(f) >= 2 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				return "unknown"
			}
			return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

// LoadAvg returns the 1, 5 and 15 minute averages from /proc/loadavg contents.
func LoadAvg(loadavg []byte) string {
	f := strings.Fields(string(loadavg))
	if len(f) < 3 {
		return "unknown"
	}
	for _, x := range f[:3] {
		if _, err := strconv.ParseFloat(x, 64); err != nil {
			return "unknown"
		}
	}
	return strings.Join(f[:3], " ")
}

// Render writes the generated markdown section (without markers).
func Render(w io.Writer, m Machine, rows []Row) error {
	var b strings.Builder
	b.WriteString("## Paired benchmarks (generated by `make bench`)\n\n")
	b.WriteString("Generated by `" + m.Invocation + "`; do not edit between the markers, the next run replaces it.\n")
	b.WriteString("Each comparison is one `go test` run measuring the baseline and ours side by side; the figures are medians over the run's `-count`.\n")
	b.WriteString("The ratio is ours / baseline: below 1 is better for a time, above 1 for a rate.\n")
	b.WriteString("Commands run from the repository root; the ONNX rows need FLOTILLA_ORT_LIB, which `make bench` exports.\n\n")
	fmt.Fprintf(&b, "- date: %s\n", m.Date)
	fmt.Fprintf(&b, "- machine: %d cores (runtime.NumCPU), %s memory, %s/%s, %s\n", m.Cores, m.MemTotal, m.GOOS, m.Arch, m.GoVersion)
	fmt.Fprintf(&b, "- load average (1/5/15 min): %s before, %s after\n", m.LoadBefore, m.LoadAfter)
	if m.Malformed > 0 {
		fmt.Fprintf(&b, "- %d malformed benchmark output lines ignored\n", m.Malformed)
	}
	b.WriteString("\n| comparison | metric | baseline | ours | baseline median | ours median | ratio | n |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		better := "lower is better"
		if r.Higher {
			better = "higher is better"
		}
		if r.Err != "" {
			fmt.Fprintf(&b, "| %s | %s (%s) | `%s` | `%s` | - | - | %s | - |\n", r.Name, r.Metric, better, r.Baseline, r.Ours, cell(r.Err))
			continue
		}
		fmt.Fprintf(&b, "| %s | %s (%s) | `%s` | `%s` | %s | %s | **%.3f** | %d / %d |\n",
			r.Name, r.Metric, better, r.Comparison.Baseline, r.Comparison.Ours,
			num(r.BaselineMedian), num(r.OursMedian), r.Ratio, len(r.BaselineValues), len(r.OursValues))
	}
	b.WriteString("\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "- **%s**: %s.\n  `%s`\n", r.Name, r.Note, r.Command)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

func num(x float64) string {
	switch {
	case math.Abs(x) >= 1000:
		return strconv.FormatFloat(x, 'f', 0, 64)
	case math.Abs(x) >= 10:
		return strconv.FormatFloat(x, 'f', 1, 64)
	default:
		return strconv.FormatFloat(x, 'g', 4, 64)
	}
}

// The markers delimiting the generated section of docs/benchmarks.md.
const (
	BeginMarker = "<!-- make bench: begin -->"
	EndMarker   = "<!-- make bench: end -->"
)

// ErrMarkers reports a document whose markers are unbalanced or out of order.
var ErrMarkers = errors.New("benchreport: markers unbalanced")

// Splice replaces what lies between the markers in doc with section, leaving
// every other byte as it was. Without markers it appends them, with the
// section, at the end. A begin marker without an end marker after it (or the
// reverse, or either twice) is an error and doc is not changed.
func Splice(doc, section []byte) ([]byte, error) {
	nb, ne := bytes.Count(doc, []byte(BeginMarker)), bytes.Count(doc, []byte(EndMarker))
	if !bytes.HasSuffix(section, []byte("\n")) {
		section = append(slices.Clip(section), '\n')
	}
	switch {
	case nb == 0 && ne == 0:
		out := slices.Clone(doc)
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n")) {
			out = append(out, '\n')
		}
		if len(out) > 0 {
			out = append(out, '\n')
		}
		out = append(out, BeginMarker+"\n"...)
		out = append(out, section...)
		return append(out, EndMarker+"\n"...), nil
	case nb != 1 || ne != 1:
		return nil, fmt.Errorf("%w: %d begin and %d end markers", ErrMarkers, nb, ne)
	}
	b := bytes.Index(doc, []byte(BeginMarker))
	e := bytes.Index(doc, []byte(EndMarker))
	if e < b {
		return nil, fmt.Errorf("%w: end marker before begin marker", ErrMarkers)
	}
	head := doc[:b+len(BeginMarker)]
	out := slices.Clone(head)
	out = append(out, '\n')
	out = append(out, section...)
	return append(out, doc[e:]...), nil
}
