package inferapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-edge/flotilla/runtime"
)

// mobilenetPath is $FLOTILLA_MOBILENET or ../../../shared/models/mobilenetv2;
// "" when it is absent outside CI.
func mobilenetPath(b *testing.B) string {
	p := os.Getenv("FLOTILLA_MOBILENET")
	if p == "" {
		p = filepath.Join("..", "..", "..", "shared", "models", "mobilenetv2", "model.onnx")
	}
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatalf("mobilenetv2 missing: %v", err)
		}
		b.Logf("mobilenetv2 part skipped: %v", err)
		return ""
	}
	return p
}

// mobilenetBundle makes a bundle folder for mobilenetv2 (no golden check:
// its weights are random).
func mobilenetBundle(b *testing.B) string {
	path := mobilenetPath(b)
	if path == "" {
		return ""
	}
	dir := b.TempDir()
	src, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "model.onnx"), src, 0o644)
	toml := `name = "mobilenetv2"
release = 1
kind = "model"
[[variants]]
runtime = "onnx"
entry = "model.onnx"
`
	for k, v := range benchOptions() {
		toml += fmt.Sprintf("options = { %s = %q }\n", k, v)
	}
	os.WriteFile(filepath.Join(dir, "bundle.toml"), []byte(toml), 0o644)
	return dir
}

// benchOptions: FLOTILLA_BENCH_THREADS=n pins ONNX Runtime's intra-op
// threads for mobilenetv2, in the bundle (the API's path) and in the direct
// load alike; unset, ONNX Runtime's default (a thread per core).
func benchOptions() map[string]string {
	if n := os.Getenv("FLOTILLA_BENCH_THREADS"); n != "" {
		return map[string]string{"intra_op_threads": n} // runtime/onnx.OptIntraOpThreads
	}
	return nil
}

// measure runs fn from `clients` goroutines b.N times in all and reports
// p50, p99 and throughput.
func measure(b *testing.B, clients int, fn func() error) {
	lat := make([]time.Duration, b.N)
	var next sync.Mutex
	i := 0
	b.ResetTimer()
	cpu0 := procCPU(benchPluginPid)
	start := time.Now()
	var wg sync.WaitGroup
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				n := i
				i++
				next.Unlock()
				if n >= b.N {
					return
				}
				t := time.Now()
				if err := fn(); err != nil {
					b.Error(err)
					return
				}
				lat[n] = time.Since(t)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if benchPluginPid != 0 {
		b.ReportMetric(float64((procCPU(benchPluginPid)-cpu0).Microseconds())/float64(b.N), "plugin-cpu-µs/op")
	}
	sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/el.Seconds(), "req/s")
}

// benchPluginPid is the plugin process BenchmarkInfer's rows call, whose
// CPU time per call measure reports beside the latency (0: none).
var benchPluginPid int

// procCPU is the user and system CPU time process pid has used, from
// /proc/PID/stat (clock ticks of 10 ms); 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis: utime and
	// stime are the 12th and 13th of them.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// measureIdle is measure for one client that leaves the process idle
// for 200 µs before each call, as a request arriving from another
// process does: the call then pays for waking the plugin's threads,
// which back-to-back calls never do. Only the call is timed.
func measureIdle(b *testing.B, fn func() error) {
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	var busy time.Duration
	for n := range b.N {
		time.Sleep(200 * time.Microsecond)
		t := time.Now()
		if err := fn(); err != nil {
			b.Fatal(err)
		}
		lat[n] = time.Since(t)
		busy += lat[n]
	}
	b.StopTimer()
	sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/busy.Seconds(), "req/s")
}

// measurePaired calls direct and api in turn, b.N times each, and
// reports each one's p50 and api's p50 over direct's in percent: both see
// the same load, and each call follows one of the other (a different
// model session in the same plugin), so neither finds the caches warmer.
func measurePaired(b *testing.B, name string, direct, api func() error) {
	lat := [2][]time.Duration{make([]time.Duration, b.N), make([]time.Duration, b.N)}
	b.ResetTimer()
	for n := range b.N {
		for j, fn := range [2]func() error{direct, api} {
			t := time.Now()
			if err := fn(); err != nil {
				b.Fatal(err)
			}
			lat[j][n] = time.Since(t)
		}
	}
	b.StopTimer()
	var p50 [2]float64
	for i, l := range lat {
		sort.Slice(l, func(a, c int) bool { return l[a] < l[c] })
		p50[i] = float64(l[len(l)/2].Microseconds())
	}
	b.ReportMetric(p50[0], "direct-p50-µs")
	b.ReportMetric(p50[1], name+"-p50-µs")
	b.ReportMetric(100*(p50[1]-p50[0])/p50[0], "over-direct-%")
}

type benchCase struct {
	name   string
	bundle string
	input  runtime.Tensor
	body   []byte            // the API request
	header map[string]string // for the binary extension
	// shmBody is the request naming the input in the shared memory region
	// "bench" (nil: no shared memory rows).
	shmBody []byte
	// options are the runtime options the bundle's variant carries, given
	// to the direct load too.
	options map[string]string
}

func digitsCase(b *testing.B) benchCase {
	rows := loadRows(b)
	var data []byte
	for _, v := range rows.Pixels[0] {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
	}
	body, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "pixels", "shape": []int{1, 64}, "datatype": "FP32", "data": rows.Pixels[0]}}})
	return benchCase{name: "digits", bundle: digitsBundle, body: body,
		input: runtime.Tensor{Name: "pixels", DType: runtime.Float32, Shape: []int64{1, 64}, Data: data}}
}

func mobilenetCase(b *testing.B) benchCase {
	dir := mobilenetBundle(b)
	if dir == "" {
		return benchCase{}
	}
	data := make([]byte, 4*3*224*224)
	for i := 0; i < len(data); i += 4 {
		binary.LittleEndian.PutUint32(data[i:], math.Float32bits(float32(i%255)/255))
	}
	hdr, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "image", "shape": []int{1, 3, 224, 224}, "datatype": "FP32",
		"parameters": map[string]any{"binary_data_size": len(data)}}}, "parameters": map[string]any{"binary_data_output": true}})
	shmBody, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "image", "shape": []int{1, 3, 224, 224}, "datatype": "FP32",
		"parameters": map[string]any{"shared_memory_region": "bench", "shared_memory_byte_size": len(data)}}}, "parameters": map[string]any{"binary_data_output": true}})
	return benchCase{name: "mobilenetv2", bundle: dir, options: benchOptions(), body: append(hdr, data...), header: map[string]string{headerLength: strconv.Itoa(len(hdr))}, shmBody: shmBody,
		input: runtime.Tensor{Name: "image", DType: runtime.Float32, Shape: []int64{1, 3, 224, 224}, Data: data}}
}

// BenchmarkInfer compares, side by side in one run, calling the ONNX
// plugin directly with going through the local API on loopback (JSON for
// digits, the binary tensor extension for mobilenetv2), at 1, 4 and 16
// concurrent clients. Rows:
//   - direct: the plugin's Infer, calls back to back;
//   - direct-idle: the same with the process idle before each call, as a
//     request from another process finds it (the plugin's threads must be
//     woken: on a 2-core VM this alone costs 60–80 µs);
//   - lifecycle: the lifecycle's Infer (counters, release lookup);
//   - handler: the API's handler called in process (decode, limiter,
//     lifecycle, encode) without a network;
//   - http-floor: net/http alone on the same loopback transport (read the
//     body, answer a canned response of the API's size);
//   - api: the API over loopback TCP from a client in this process;
//   - api-unix: the same over the agent's unix socket (DATA/infer.sock);
//   - http-floor-ext, api-ext: the same from a client in its own process
//     (a KServe client is one), see measureExternal;
//   - api-shm, api-shm-unix (mobilenetv2): the input in a registered
//     system shared memory region instead of the body; the client writes
//     the input into the region before every request (a 602 KB copy, as
//     a client with a new frame each time does), then posts the JSON
//     header alone; handler-shm is the same through the handler in
//     process;
//   - paired-api, paired-api-shm, paired-api-shm-unix (mobilenetv2, 1
//     client): direct calls and that row's calls in turn, so that both see
//     the same load on a noisy machine; each reports both p50s and the
//     row's over direct's in percent (see measurePaired).
//
// handler − lifecycle is the API's own code; api − direct-idle is what a
// caller pays for the API over calling the plugin itself.
func BenchmarkInfer(b *testing.B) {
	for _, mk := range []func(*testing.B) benchCase{digitsCase, mobilenetCase} {
		c := mk(b)
		if c.bundle == "" {
			continue
		}
		p := onnxPlugin(b)
		benchPluginPid = p.Pid()
		l := activate(b, p, c.bundle)
		direct, err := p.Load(context.Background(), runtime.LoadSpec{Dir: c.bundle, Entry: "model.onnx", Options: c.options})
		if err != nil {
			b.Fatal(err)
		}
		s := New(Config{Models: l, Concurrency: 16, MaxQueue: 64})
		tcp, unix, base := serve(b, s)
		tcp.Transport = &http.Transport{MaxIdleConnsPerHost: 32}
		unix.Transport.(*http.Transport).MaxIdleConnsPerHost = 32
		url := base + "/v2/models/" + c.name + "/infer"
		in := []runtime.Tensor{c.input}
		floorURL := httpFloor(b, tcp, url, c)
		callWith := func(client *http.Client, url string) func() error {
			return func() error {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(c.body))
				for k, v := range c.header {
					req.Header.Set(k, v)
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return err
			}
		}
		call := func(url string) func() error { return callWith(tcp, url) }
		for _, clients := range []int{1, 4, 16} {
			b.Run(fmt.Sprintf("%s/direct/clients=%d", c.name, clients), func(b *testing.B) {
				measure(b, clients, func() error {
					_, err := direct.Infer(context.Background(), in)
					return err
				})
			})
			if clients == 1 {
				b.Run(fmt.Sprintf("%s/direct-idle/clients=1", c.name), func(b *testing.B) {
					measureIdle(b, func() error {
						_, err := direct.Infer(context.Background(), in)
						return err
					})
				})
			}
			b.Run(fmt.Sprintf("%s/lifecycle/clients=%d", c.name, clients), func(b *testing.B) {
				measure(b, clients, func() error {
					_, err := l.Infer(context.Background(), c.name, in)
					return err
				})
			})
			b.Run(fmt.Sprintf("%s/handler/clients=%d", c.name, clients), func(b *testing.B) {
				h := s.Handler()
				measure(b, clients, func() error {
					req := httptest.NewRequest(http.MethodPost, url, bytes.NewReader(c.body))
					for k, v := range c.header {
						req.Header.Set(k, v)
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != 200 {
						return fmt.Errorf("status %d", rec.Code)
					}
					return nil
				})
			})
			b.Run(fmt.Sprintf("%s/http-floor/clients=%d", c.name, clients), func(b *testing.B) {
				measure(b, clients, call(floorURL))
			})
			b.Run(fmt.Sprintf("%s/api/clients=%d", c.name, clients), func(b *testing.B) {
				measure(b, clients, call(url))
			})
			b.Run(fmt.Sprintf("%s/api-unix/clients=%d", c.name, clients), func(b *testing.B) {
				measure(b, clients, callWith(unix, "http://agent/v2/models/"+c.name+"/infer"))
			})
			if c.shmBody != nil {
				region := benchRegion(b, tcp, base, len(c.input.Data))
				shmCall := func(client *http.Client, url string) func() error {
					return func() error {
						copy(region, c.input.Data)
						req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(c.shmBody))
						resp, err := client.Do(req)
						if err != nil {
							return err
						}
						_, err = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if resp.StatusCode != 200 {
							return fmt.Errorf("status %d", resp.StatusCode)
						}
						return err
					}
				}
				if clients == 1 {
					directFn := func() error { _, err := direct.Infer(context.Background(), in); return err }
					for _, p := range []struct {
						name string
						fn   func() error
					}{{"api", call(url)}, {"api-shm", shmCall(tcp, url)}, {"api-shm-unix", shmCall(unix, "http://agent/v2/models/"+c.name+"/infer")}} {
						b.Run(c.name+"/paired-"+p.name+"/clients=1", func(b *testing.B) {
							measurePaired(b, p.name, directFn, p.fn)
						})
					}
				}
				b.Run(fmt.Sprintf("%s/handler-shm/clients=%d", c.name, clients), func(b *testing.B) {
					h := s.Handler()
					measure(b, clients, func() error {
						copy(region, c.input.Data)
						req := httptest.NewRequest(http.MethodPost, url, bytes.NewReader(c.shmBody))
						rec := httptest.NewRecorder()
						h.ServeHTTP(rec, req)
						if rec.Code != 200 {
							return fmt.Errorf("status %d: %s", rec.Code, rec.Body)
						}
						return nil
					})
				})
				b.Run(fmt.Sprintf("%s/api-shm/clients=%d", c.name, clients), func(b *testing.B) {
					measure(b, clients, shmCall(tcp, url))
				})
				b.Run(fmt.Sprintf("%s/api-shm-unix/clients=%d", c.name, clients), func(b *testing.B) {
					measure(b, clients, shmCall(unix, "http://agent/v2/models/"+c.name+"/infer"))
				})
			}
			b.Run(fmt.Sprintf("%s/http-floor-ext/clients=%d", c.name, clients), func(b *testing.B) {
				measureExternal(b, clients, floorURL, c)
			})
			b.Run(fmt.Sprintf("%s/api-ext/clients=%d", c.name, clients), func(b *testing.B) {
				measureExternal(b, clients, url, c)
			})
		}
		direct.Close()
	}
}

// httpFloor serves, on loopback beside the API, a handler that reads the
// request body and answers with the API's own response bytes for c: the
// cost of net/http itself. It returns its URL.
func httpFloor(b *testing.B, client *http.Client, apiURL string, c benchCase) string {
	req, _ := http.NewRequest(http.MethodPost, apiURL, bytes.NewReader(c.body))
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	canned, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ct := resp.Header.Get("Content-Type")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Content-Length", strconv.Itoa(len(canned)))
		w.Write(canned)
	})}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/floor"
}

// benchRegion creates a shared memory object of size bytes, registers it
// as "bench" (unregistering an earlier one), and returns the client's
// read-write mapping of it.
func benchRegion(b *testing.B, c *http.Client, base string, size int) []byte {
	key, path := shmObject(b, size)
	shmCall(b, c, http.MethodPost, base+"/v2/systemsharedmemory/region/bench/unregister", "")
	if code, body := register(b, c, base, "bench", key, 0, int64(size)); code != 200 {
		b.Fatalf("register: %d %s", code, body)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(m) })
	return m
}
