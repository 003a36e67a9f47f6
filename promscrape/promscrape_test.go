package promscrape

import (
	"strings"
	"testing"
)

const page = `# HELP x_total Things.
# TYPE x_total counter
x_total{kind="a"} 3
x_total{kind="b"} 4
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{route="/a",le="0.1"} 50
lat_seconds_bucket{route="/a",le="0.2"} 90
lat_seconds_bucket{route="/a",le="+Inf"} 100
lat_seconds_sum{route="/a"} 12
lat_seconds_count{route="/a"} 100
`

func TestParseValueQuantile(t *testing.T) {
	f, err := Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := f.Value("x_total", "kind", "b"); !ok || v != 4 {
		t.Fatalf("x_total{kind=b} = %v, %v", v, ok)
	}
	if v, _ := f.Value("x_total"); v != 7 {
		t.Fatalf("x_total summed = %v", v)
	}
	if _, ok := f.Value("x_total", "kind", "c"); ok {
		t.Fatal("a sample with kind=c found")
	}
	if got := strings.Join(f.Labels("x_total", "kind"), ","); got != "a,b" {
		t.Fatalf("labels %q", got)
	}
	if v, _ := f.Value("lat_seconds", "route", "/a"); v != 100 {
		t.Fatalf("histogram count %v", v)
	}
	// p50 is the first bucket's bound; p70 halfway through the second; p99
	// lies in +Inf and is reported as the highest finite bound.
	for q, want := range map[float64]float64{0.5: 0.1, 0.7: 0.15, 0.99: 0.2} {
		if v, ok := f.Quantile("lat_seconds", q, "route", "/a"); !ok || v < want-1e-9 || v > want+1e-9 {
			t.Fatalf("q%v = %v, want %v", q, v, want)
		}
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	for _, bad := range []string{"x_total{kind=\"a\" 3\n", "# TYPE y gauge\ny nope\n", "x{" + strings.Repeat("a", 10) + "\n"} {
		if _, err := Parse(strings.NewReader(bad)); err == nil {
			t.Fatalf("parsed %q", bad)
		}
	}
}

func TestParseRefusesOversizedPage(t *testing.T) {
	line := "x_total 1\n"
	big := strings.Repeat("# c\n", MaxPage/4+1) + line
	if _, err := Parse(strings.NewReader(big)); err == nil {
		t.Fatal("a page over MaxPage parsed")
	}
}
