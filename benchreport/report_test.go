package benchreport

import (
	"bytes"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

func TestParseCapturedOutput(t *testing.T) {
	f, err := os.Open("testdata/go-test-bench.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Malformed != 0 {
		t.Errorf("malformed = %d in real go test output, want 0", s.Malformed)
	}
	// Custom metric and the -2 GOMAXPROCS suffix removed from the name.
	rates := s.Values["BenchmarkIngestPipeline/features=4/decoders"]["summaries/s"]
	if len(rates) != 2 {
		t.Fatalf("summaries/s for decoders = %v, want 2 values; names: %v", rates, keys(s.Values))
	}
	if p := s.Procs["BenchmarkIngestPipeline/features=4/decoders"]; p != "2" {
		t.Errorf("GOMAXPROCS suffix = %q, want 2", p)
	}
	// ns/op is kept under the unit go test printed, not benchfmt's tidied sec/op.
	if ns := s.Values["BenchmarkQueue/chan"]["ns/op"]; len(ns) != 2 || ns[0] <= 0 {
		t.Errorf("ns/op for BenchmarkQueue/chan = %v", ns)
	}
	if b := s.Values["BenchmarkQueue/chunks"]["B/op"]; len(b) != 2 {
		t.Errorf("B/op for BenchmarkQueue/chunks = %v", b)
	}
	if _, ok := s.Values["BenchmarkQueue/chan"]["sec/op"]; ok {
		t.Error("tidied unit sec/op leaked into the samples")
	}
}

func TestParseHostileInput(t *testing.T) {
	in := strings.Join([]string{
		"goos: linux",
		"BenchmarkA/x-2 \t 100\t 50 ns/op\t 7 p50-µs",
		"BenchmarkA/x-2 notanumber 50 ns/op", // bad iteration count
		"BenchmarkA/x-2 100 fifty ns/op",     // bad value
		"BenchmarkA/x-2 100 50",              // value without unit
		"BenchmarkA/x-2 100",                 // no measurements
		"BenchmarkA/x-2",                     // -v style name-only line: not a result
		"\x00\xff\xfe garbage",
		"ok  \tgithub.com/x\t1.2s",
		"BenchmarkA/x-2 \t 100\t 70 ns/op\t 9 p50-µs",
	}, "\n")
	s, err := Parse(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if s.Malformed != 4 {
		t.Errorf("malformed = %d, want 4", s.Malformed)
	}
	if got := s.Values["BenchmarkA/x"]["p50-µs"]; len(got) != 2 || got[0] != 7 || got[1] != 9 {
		t.Errorf("p50-µs = %v, want [7 9]", got)
	}
}

func TestParseTooLarge(t *testing.T) {
	line := []byte("BenchmarkA-2 1 1 ns/op\n")
	r := bytes.NewReader(bytes.Repeat(line, MaxOutput/len(line)+2))
	if _, err := Parse(r); err == nil {
		t.Fatal("output over MaxOutput accepted")
	}
}

func TestParseLongLine(t *testing.T) {
	in := "BenchmarkA-2 1 1 ns/op\nBenchmark" + strings.Repeat("x", 1<<20) + " 1 1 ns/op\n"
	if _, err := Parse(strings.NewReader(in)); err == nil {
		t.Fatal("a 1 MiB line was not reported")
	}
}

func TestSplitProcs(t *testing.T) {
	for _, c := range []struct{ in, name, procs string }{
		{"BenchmarkInfer/digits/api/clients=1-2", "BenchmarkInfer/digits/api/clients=1", "2"},
		{"BenchmarkIngestReplicas/postgres/replicas=3", "BenchmarkIngestReplicas/postgres/replicas=3", ""},
		{"BenchmarkShmRead/decode-binary-16", "BenchmarkShmRead/decode-binary", "16"},
		{"BenchmarkShmRead/decode-binary", "BenchmarkShmRead/decode-binary", ""},
		{"BenchmarkX-", "BenchmarkX-", ""},
	} {
		n, p := splitProcs(c.in)
		if n != c.name || p != c.procs {
			t.Errorf("splitProcs(%q) = %q, %q; want %q, %q", c.in, n, p, c.name, c.procs)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		in := append([]float64(nil), c.in...)
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
		if !equal(in, c.in) {
			t.Errorf("Median reordered its input: %v", c.in)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("Median(nil) is not NaN")
	}
}

func TestCompute(t *testing.T) {
	c := Comparison{Name: "c", Pkg: "./p", Bench: "^BenchmarkA$", Baseline: "BenchmarkA/base", Ours: "BenchmarkA/ours", Metric: "p50-µs"}
	s, err := Parse(strings.NewReader(
		"BenchmarkA/base-2 10 1 ns/op 200 p50-µs\n" +
			"BenchmarkA/ours-2 10 1 ns/op 300 p50-µs\n" +
			"BenchmarkA/base-2 10 1 ns/op 100 p50-µs\n" +
			"BenchmarkA/ours-2 10 1 ns/op 100 p50-µs\n" +
			"BenchmarkA/base-2 10 1 ns/op 400 p50-µs\n" +
			"BenchmarkA/ours-2 10 1 ns/op 250 p50-µs\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := Compute(c, 3, s)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	if r.BaselineMedian != 200 || r.OursMedian != 250 || r.Ratio != 1.25 {
		t.Errorf("medians %v / %v ratio %v, want 200 / 250 ratio 1.25", r.BaselineMedian, r.OursMedian, r.Ratio)
	}
	if r.Command != `go test -run '^$' -bench '^BenchmarkA$' -benchmem -count 3 ./p` {
		t.Errorf("command = %s", r.Command)
	}

	missing := c
	missing.Ours = "BenchmarkA/absent"
	if r := Compute(missing, 3, s); r.Err == "" || !strings.Contains(r.Err, "BenchmarkA/absent") {
		t.Errorf("missing row: Err = %q", r.Err)
	}
	zero, _ := Parse(strings.NewReader("BenchmarkA/base-2 10 0 p50-µs\nBenchmarkA/ours-2 10 5 p50-µs\n"))
	if r := Compute(c, 1, zero); r.Err == "" || r.Ratio != 0 {
		t.Errorf("zero baseline: Err = %q ratio %v", r.Err, r.Ratio)
	}
}

func TestCommandQuoting(t *testing.T) {
	c := Comparison{Pkg: "./agent", Bench: "^BenchmarkMonitorInfer$/^digits$/^(off|on)$", Benchtime: "2s"}
	want := `go test -run '^$' -bench '^BenchmarkMonitorInfer$/^digits$/^(off|on)$' -benchmem -count 1 -benchtime 2s ./agent`
	if got := c.Command(1); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if got := shellQuote("it's"); got != `'it'\''s'` {
		t.Errorf("shellQuote = %s", got)
	}
}

func TestComparisonsDeclared(t *testing.T) {
	seen := map[string]bool{}
	for _, c := range Comparisons {
		if seen[c.Name] {
			t.Errorf("duplicate comparison %s", c.Name)
		}
		seen[c.Name] = true
		if c.Pkg == "" || c.Bench == "" || c.Metric == "" || c.Note == "" || c.Baseline == c.Ours {
			t.Errorf("incomplete comparison %+v", c)
		}
		if _, err := os.Stat("../" + strings.TrimPrefix(c.Pkg, "./")); err != nil {
			t.Errorf("%s: package %s: %v", c.Name, c.Pkg, err)
		}
		if base := strings.SplitN(c.Baseline, "/", 2)[0]; !strings.HasPrefix(c.Ours, base+"/") {
			t.Errorf("%s: baseline %s and ours %s are not rows of one benchmark", c.Name, c.Baseline, c.Ours)
		}
	}
}

func TestSplice(t *testing.T) {
	doc := []byte("# Benchmarks\n\nhand written\n\n" + BeginMarker + "\nold figures\n" + EndMarker + "\n\ntrailing section\n")
	out, err := Splice(doc, []byte("new figures\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nhand written\n\n" + BeginMarker + "\nnew figures\n" + EndMarker + "\n\ntrailing section\n"
	if string(out) != want {
		t.Errorf("got\n%s\nwant\n%s", out, want)
	}
	again, err := Splice(out, []byte("new figures\n"))
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("second splice changed the document: %v\n%s", err, again)
	}
	if !bytes.HasPrefix(doc, []byte("# Benchmarks\n\nhand written\n\n"+BeginMarker)) {
		t.Error("Splice modified its input")
	}
}

func TestSpliceAppendsMarkers(t *testing.T) {
	doc := []byte("# Benchmarks\n\nno newline at end")
	out, err := Splice(doc, []byte("figures"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(out, doc) {
		t.Error("the existing text was not kept byte-identical")
	}
	want := string(doc) + "\n\n" + BeginMarker + "\nfigures\n" + EndMarker + "\n"
	if string(out) != want {
		t.Errorf("got %q\nwant %q", out, want)
	}
	again, err := Splice(out, []byte("figures"))
	if err != nil || !bytes.Equal(again, out) {
		t.Errorf("splicing the appended section again changed it: %v", err)
	}
}

func TestSpliceRefusesUnbalancedMarkers(t *testing.T) {
	for name, doc := range map[string]string{
		"begin only":   "a\n" + BeginMarker + "\nb\n",
		"end only":     "a\n" + EndMarker + "\n",
		"end first":    EndMarker + "\n" + BeginMarker + "\n",
		"two begins":   BeginMarker + "\n" + BeginMarker + "\n" + EndMarker + "\n",
		"two sections": BeginMarker + EndMarker + BeginMarker + EndMarker,
	} {
		if out, err := Splice([]byte(doc), []byte("x\n")); !errors.Is(err, ErrMarkers) || out != nil {
			t.Errorf("%s: err = %v, out = %q", name, err, out)
		}
	}
}

func TestRender(t *testing.T) {
	m := Machine{Cores: 2, MemTotal: MemTotal([]byte("MemTotal:        8131148 kB\nMemFree: 1 kB\n")),
		LoadBefore: LoadAvg([]byte("1.50 2.00 2.50 3/400 1234\n")), LoadAfter: LoadAvg([]byte("bad")),
		GoVersion: "go1.26.8", GOOS: "linux", Arch: "amd64", Date: "2026-11-30 15:00 UTC", Invocation: "flotilla-benchreport -count 3", Malformed: 1}
	c := Comparison{Name: "rate", Pkg: "./p", Bench: "^BenchmarkA$", Baseline: "BenchmarkA/base", Ours: "BenchmarkA/ours", Metric: "summaries/s", Higher: true, Note: "ours vs base"}
	s, _ := Parse(strings.NewReader("BenchmarkA/base-2 1 1 ns/op 10000 summaries/s\nBenchmarkA/ours-2 1 1 ns/op 15000 summaries/s\n"))
	failed := c
	failed.Name = "failed"
	var b bytes.Buffer
	if err := Render(&b, m, []Row{Compute(c, 1, s), Compute(failed, 1, nil)}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"2 cores", "7.8 GiB", "1.50 2.00 2.50 before, unknown after", "go1.26.8", "2026-11-30 15:00 UTC",
		"| rate | summaries/s (higher is better) | `BenchmarkA/base` | `BenchmarkA/ours` | 10000 | 15000 | **1.500** | 1 / 1 |",
		"| failed |", "no summaries/s for BenchmarkA/base", "1 malformed",
		"- **rate**: ours vs base.\n  `go test -run '^$' -bench '^BenchmarkA$' -benchmem -count 1 ./p`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, BeginMarker) || strings.Contains(out, EndMarker) {
		t.Error("rendered section contains a marker")
	}
}

func keys(m map[string]map[string][]float64) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	return k
}

func equal(a, b []float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// FuzzParse: any input parses without panicking, and every value parsed
// belongs to a name and unit that appeared in the input.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/go-test-bench.txt")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte("BenchmarkA-2 1 NaN ns/op\nBenchmarkA-2 1 1e400 x/op\nBenchmark 1 1 ns/op\nUnit ns/op assume=exact\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := Parse(bytes.NewReader(in))
		if err != nil {
			return
		}
		for name, units := range s.Values {
			if !bytes.Contains(in, []byte(strings.TrimPrefix(name, "Benchmark"))) {
				t.Errorf("name %q not in the input", name)
			}
			for unit := range units {
				if !bytes.Contains(in, []byte(unit)) {
					t.Errorf("unit %q not in the input", unit)
				}
			}
		}
	})
}
