package inferapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"sync"
	"testing"
	"time"
)

// loadClientEnv makes the test binary a load client (see measureExternal):
// a KServe client is another process on the device, so measuring from one
// keeps the client's goroutines and its garbage out of the agent's
// scheduler, as in the field.
const loadClientEnv = "FLOTILLA_INFERAPI_LOAD_CLIENT"

// loadSpec is what the parent hands the load client.
type loadSpec struct {
	URL     string            `json:"url"`
	Body    []byte            `json:"body"`
	Header  map[string]string `json:"header"`
	Clients int               `json:"clients"`
	Warmup  int               `json:"warmup"`
	For     time.Duration     `json:"for"`
}

// loadResult is what it answers.
type loadResult struct {
	Latencies []time.Duration `json:"latencies"`
	Elapsed   time.Duration   `json:"elapsed"`
	Error     string          `json:"error,omitempty"`
}

// runLoadClient reads a loadSpec on stdin, sends requests from
// spec.Clients goroutines for spec.For after a warm-up, and writes a
// loadResult on stdout.
func runLoadClient() int {
	var spec loadSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * spec.Clients}}
	call := func() error {
		req, _ := http.NewRequest(http.MethodPost, spec.URL, bytes.NewReader(spec.Body))
		for k, v := range spec.Header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return err
	}
	var res loadResult
	for range spec.Warmup {
		if err := call(); err != nil {
			res.Error = err.Error()
		}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(spec.For)
	for range spec.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var lat []time.Duration
			for time.Now().Before(deadline) {
				t := time.Now()
				if err := call(); err != nil {
					mu.Lock()
					res.Error = err.Error()
					mu.Unlock()
					return
				}
				lat = append(lat, time.Since(t))
			}
			mu.Lock()
			res.Latencies = append(res.Latencies, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if err := json.NewEncoder(os.Stdout).Encode(&res); err != nil {
		return 2
	}
	return 0
}

// measureExternal runs the load client in its own process against url
// for about benchtime per b.N iteration (so b.N stays 1 at -benchtime 2s)
// and reports its p50, p99 and throughput.
func measureExternal(b *testing.B, clients int, url string, c benchCase) {
	per := 2 * time.Second
	if d, err := time.ParseDuration(os.Getenv("FLOTILLA_BENCH_LOAD_FOR")); err == nil && d > 0 {
		per = d
	}
	var all []time.Duration
	var el time.Duration
	for range b.N {
		spec, _ := json.Marshal(loadSpec{URL: url, Body: c.body, Header: c.header, Clients: clients, Warmup: 50, For: per})
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), loadClientEnv+"=1")
		cmd.Stdin = bytes.NewReader(spec)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("load client: %v", err)
		}
		var res loadResult
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatalf("load client output: %v", err)
		}
		if res.Error != "" {
			b.Fatalf("load client: %s", res.Error)
		}
		if len(res.Latencies) == 0 {
			b.Fatal("load client made no calls")
		}
		all = append(all, res.Latencies...)
		el += res.Elapsed
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(len(all))/el.Seconds(), "req/s")
	b.ReportMetric(float64(len(all)), "calls")
}
