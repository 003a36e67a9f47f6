package delivery_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// The delivery benchmark (not in CI):
//
//	FLOTILLA_BENCH=1 go test ./controlplane/delivery -run TestDeliveryBenchmark -v -timeout 30m
//
// The sending side (wave publisher and repairer, HTTP server, raw TCP
// sender, and the embedded broker in its mode) runs as a child process —
// this test binary re-run with FLOTILLA_BENCH_ROLE — so its CPU seconds are
// its own rusage; Mosquitto's are read from /proc. Every receiver runs in
// this process and puts chunks into the same verifying sink.

// hashSink verifies each chunk's length and SHA-256 against the manifest
// and keeps only the fact: the same sink for every transport.
type hashSink struct {
	mu   sync.Mutex
	have map[[32]byte]bool
}

func (s *hashSink) Missing(m *pb.BundleManifest) []chunkstore.ChunkRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []chunkstore.ChunkRef
	seen := map[[32]byte]bool{}
	for _, r := range chunkstore.Refs(m) {
		if !s.have[r.SHA256] && !seen[r.SHA256] {
			seen[r.SHA256] = true
			out = append(out, r)
		}
	}
	return out
}

func (s *hashSink) Put(_ context.Context, r chunkstore.ChunkRef, data []byte) error {
	if len(data) != int(r.Length) || sha256.Sum256(data) != r.SHA256 {
		return chunkstore.ErrMismatch
	}
	s.mu.Lock()
	s.have[r.SHA256] = true
	s.mu.Unlock()
	return nil
}

type senderStats struct {
	Bytes   int64   `json:"bytes"`
	CPU     float64 `json:"cpu"` // filled by the parent from rusage
	Repairs int64   `json:"repair_bytes"`
	Dropped uint64  `json:"broker_dropped"`
}

type benchResult struct {
	mode      string
	wall      time.Duration
	sent      senderStats
	brokerCPU float64
}

func TestDeliveryBenchmark(t *testing.T) {
	if role := os.Getenv("FLOTILLA_BENCH_ROLE"); role != "" {
		benchSender(t, role)
		return
	}
	if os.Getenv("FLOTILLA_BENCH") == "" {
		t.Skip("set FLOTILLA_BENCH=1 to run the delivery benchmark")
	}
	sizes := [][2]int{{64, 50}, {16, 200}}
	if s := os.Getenv("FLOTILLA_BENCH_SIZES"); s != "" { // e.g. "8x10,4x20"
		sizes = nil
		for _, p := range strings.Split(s, ",") {
			a, b, _ := strings.Cut(p, "x")
			mib, _ := strconv.Atoi(a)
			n, _ := strconv.Atoi(b)
			sizes = append(sizes, [2]int{mib, n})
		}
	}
	for _, sz := range sizes {
		mib, n := sz[0], sz[1]
		t.Run(fmt.Sprintf("%dMiB-%dagents", mib, n), func(t *testing.T) { benchOne(t, mib, n) })
	}
}

func benchOne(t *testing.T, mib, n int) {
	storeDir := t.TempDir()
	store, err := bundle.OpenStore(storeDir)
	if err != nil {
		t.Fatal(err)
	}
	// The digits model plus random data: mib MiB in all, about.
	digest, m := build(t, store, bundleDir(t, mib, 7))
	var total int64
	for _, r := range chunkstore.Refs(m) {
		total += int64(r.Length)
	}
	ids := deviceIDs(n)
	mosq := startMosquitto(t, ids)
	var results []benchResult
	for _, mode := range []string{"wave-mosquitto", "wave-embedded", "http", "tcp"} {
		r := benchMode(t, mode, mosq, storeDir, digest, m, ids)
		results = append(results, r)
		t.Logf("%s: wall %s, sent %d bytes (%.2f copies), sender CPU %.2fs, broker CPU %.2fs, repair bytes %d, broker dropped %d",
			mode, r.wall.Round(time.Millisecond), r.sent.Bytes, float64(r.sent.Bytes)/float64(total),
			r.sent.CPU, r.brokerCPU, r.sent.Repairs, r.sent.Dropped)
	}
	http := results[2]
	var b strings.Builder
	fmt.Fprintf(&b, "\n%d MiB bundle (%d bytes) to %d agents\n", mib, total, n)
	fmt.Fprintf(&b, "%-15s %9s %8s %12s %10s %9s %10s %9s\n", "mode", "wall s", "×http", "copies sent", "sender s", "×http", "broker s", "total s")
	for _, r := range results {
		fmt.Fprintf(&b, "%-15s %9.2f %8.2f %12.2f %10.2f %9.2f %10.2f %9.2f\n", r.mode, r.wall.Seconds(),
			r.wall.Seconds()/http.wall.Seconds(), float64(r.sent.Bytes)/float64(total), r.sent.CPU,
			r.sent.CPU/http.sent.CPU, r.brokerCPU, r.sent.CPU+r.brokerCPU)
	}
	t.Log(b.String())
}

func benchMode(t *testing.T, mode string, mosq brokerEnv, storeDir, digest string, m *pb.BundleManifest, ids []string) benchResult {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDeliveryBenchmark$")
	cmd.Env = append(os.Environ(), "FLOTILLA_BENCH_ROLE="+mode, "FLOTILLA_BENCH_STORE="+storeDir,
		"FLOTILLA_BENCH_DIGEST="+digest, "FLOTILLA_BENCH_BROKER="+mosq.url, "FLOTILLA_BENCH_N="+strconv.Itoa(len(ids)))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stdout)
	lines.Buffer(make([]byte, 1<<20), 1<<20)
	next := func(prefix string) string {
		for lines.Scan() {
			if s, ok := strings.CutPrefix(lines.Text(), prefix); ok {
				return s
			}
		}
		t.Fatalf("%s: sender ended without %q", mode, prefix)
		return ""
	}
	addr := next("READY ")
	brokerPID := mosquittoPID(t)
	env := mosq
	if mode == "wave-embedded" {
		env = brokerEnv{name: "embedded", url: "tcp://" + addr}
		brokerPID = 0
	}
	brokerCPU0 := procCPU(brokerPID)

	var wall time.Duration
	switch mode {
	case "wave-mosquitto", "wave-embedded":
		wall = benchMQTT(t, env, stdin, digest, m, ids)
	case "http":
		wall = benchHTTP(t, stdin, addr, m, len(ids))
	case "tcp":
		wall = benchTCP(t, stdin, addr, m, len(ids))
	}
	stdin.Close()
	var st senderStats
	if err := json.Unmarshal([]byte(next("STATS ")), &st); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	st.CPU = tv(ru.Utime) + tv(ru.Stime)
	return benchResult{mode: mode, wall: wall, sent: st, brokerCPU: procCPU(brokerPID) - brokerCPU0}
}

func tv(v syscall.Timeval) float64 { return float64(v.Sec) + float64(v.Usec)/1e6 }

// mosquittoPID finds this process's mosquitto child.
func mosquittoPID(t *testing.T) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil || !strings.Contains(string(stat), "(mosquitto)") {
			continue
		}
		f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
			return pid
		}
	}
	t.Fatal("mosquitto child not found")
	return 0
}

// procCPU is a process's user+system CPU seconds (clock ticks of 1/100 s).
func procCPU(pid int) float64 {
	if pid == 0 {
		return 0
	}
	stat, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(stat)[strings.LastIndexByte(string(stat), ')')+2:])
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

// benchMQTT connects every agent, starts its Fetch, tells the sender to
// run the wave and waits for every Fetch to finish.
func benchMQTT(t *testing.T, env brokerEnv, stdin io.Writer, digest string, m *pb.BundleManifest, ids []string) time.Duration {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	var failed atomic.Int64
	for _, id := range ids {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			d := dial(t, env, id)
			defer d.client.Disconnect(0)
			sink := &hashSink{have: map[[32]byte]bool{}}
			once := sync.OnceFunc(ready.Done)
			err := fetch.Fetch(context.Background(), d.conn(), sink, m, fetch.Options{DeviceID: id, Digest: digest,
				Quiet: 3 * time.Second, Deadline: 10 * time.Minute, Buffer: 512,
				Progress: func(p fetch.Progress) {
					if p.Listening {
						once()
					}
				}})
			if err != nil {
				failed.Add(1)
				t.Errorf("%s: %v", id, err)
			}
		}()
	}
	ready.Wait()
	close(start)
	t0 := time.Now()
	fmt.Fprintln(stdin, "GO")
	done.Wait()
	return time.Since(t0)
}

func benchHTTP(t *testing.T, stdin io.Writer, addr string, m *pb.BundleManifest, n int) time.Duration {
	tr := &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: n}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Minute}
	refs := (&hashSink{have: map[[32]byte]bool{}}).Missing(m)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := &hashSink{have: map[[32]byte]bool{}}
			for _, r := range refs {
				resp, err := client.Get("http://" + addr + "/chunks/" + hex.EncodeToString(r.SHA256[:]))
				if err != nil {
					t.Error(err)
					return
				}
				data, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err == nil {
					err = sink.Put(context.Background(), r, data)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

func benchTCP(t *testing.T, stdin io.Writer, addr string, m *pb.BundleManifest, n int) time.Duration {
	refs := (&hashSink{have: map[[32]byte]bool{}}).Missing(m)
	t0 := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			br := bufio.NewReaderSize(c, 256<<10)
			sink := &hashSink{have: map[[32]byte]bool{}}
			for _, r := range refs {
				data := make([]byte, r.Length)
				if _, err := io.ReadFull(br, data); err != nil {
					t.Error(err)
					return
				}
				if err := sink.Put(context.Background(), r, data); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(t0)
}

// benchSender is the child process: the control plane's side of one mode.
func benchSender(t *testing.T, mode string) {
	store, err := bundle.OpenStore(os.Getenv("FLOTILLA_BENCH_STORE"))
	if err != nil {
		t.Fatal(err)
	}
	digest := os.Getenv("FLOTILLA_BENCH_DIGEST")
	_, m, err := store.Manifest(digest)
	if err != nil {
		t.Fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	var st senderStats
	switch mode {
	case "wave-mosquitto", "wave-embedded":
		env := brokerEnv{url: os.Getenv("FLOTILLA_BENCH_BROKER")}
		if mode == "wave-embedded" {
			env = startEmbedded(t)
		}
		cp := startControl(t, env, store, delivery.RepairOptions{})
		counted := &countingPublisher{p: cp.pub}
		fmt.Println("READY " + strings.TrimPrefix(env.url, "tcp://"))
		in.Scan() // GO
		rate := int64(delivery.DefaultWaveRate)
		if s := os.Getenv("FLOTILLA_BENCH_RATE"); s != "" {
			rate, _ = strconv.ParseInt(s, 10, 64)
		}
		w, err := delivery.NewWave(store, counted, digest, delivery.WaveOptions{Rate: rate, Burst: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		for in.Scan() {
		}
		rs := cp.rep.Stats()
		st.Bytes = counted.n.Load() + int64(rs.Bytes)
		st.Repairs = int64(rs.Bytes)
		if env.embedded != nil {
			st.Dropped = env.embedded.Stats().Dropped
		}
	case "http":
		var sent atomic.Int64
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, err := hex.DecodeString(strings.TrimPrefix(r.URL.Path, "/chunks/"))
			if err != nil || len(raw) != 32 {
				http.NotFound(w, r)
				return
			}
			data, err := store.Chunk([32]byte(raw))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			k, _ := w.Write(data)
			sent.Add(int64(k))
		})}
		go func() { _ = srv.Serve(ln) }()
		fmt.Println("READY " + ln.Addr().String())
		for in.Scan() {
		}
		srv.Close()
		st.Bytes = sent.Load()
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fmt.Println("READY " + ln.Addr().String())
		n, _ := strconv.Atoi(os.Getenv("FLOTILLA_BENCH_N"))
		refs := (&hashSink{have: map[[32]byte]bool{}}).Missing(m)
		var sent atomic.Int64
		var wg sync.WaitGroup
		for range n {
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				for _, r := range refs {
					data, err := store.Chunk(r.SHA256)
					if err != nil {
						t.Error(err)
						return
					}
					k, _ := c.Write(data)
					sent.Add(int64(k))
				}
			}()
		}
		wg.Wait()
		for in.Scan() {
		}
		st.Bytes = sent.Load()
	}
	out, _ := json.Marshal(st)
	fmt.Println("STATS " + string(out))
}

// countingPublisher counts the payload bytes the control plane publishes.
type countingPublisher struct {
	p delivery.Publisher
	n atomic.Int64
}

func (c *countingPublisher) Publish(ctx context.Context, tp string, qos byte, retained bool, payload []byte) error {
	err := c.p.Publish(ctx, tp, qos, retained, payload)
	if err == nil {
		c.n.Add(int64(len(payload)))
	}
	return err
}
