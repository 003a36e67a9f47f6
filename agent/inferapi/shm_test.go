package inferapi

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/flotilla-edge/flotilla/runtime"
)

var shmSeq atomic.Int64

// shmObject creates a POSIX shared memory object of size bytes, as
// shm_open does (a file under /dev/shm), removed when the test ends. It
// returns its key ("/name") and its path.
func shmObject(t testing.TB, size int) (key, path string) {
	t.Helper()
	name := fmt.Sprintf("flotilla-inferapi-test-%d-%d", os.Getpid(), shmSeq.Add(1))
	path = filepath.Join(shmDir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(size)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	t.Cleanup(func() { os.Remove(path) })
	return "/" + name, path
}

// writeShm writes b at off in the object at path.
func writeShm(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func shmCall(t testing.TB, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

func register(t testing.TB, c *http.Client, base, name, key string, off, size int64) (int, string) {
	t.Helper()
	return shmCall(t, c, http.MethodPost, base+"/v2/systemsharedmemory/region/"+name+"/register",
		fmt.Sprintf(`{"key":%s,"offset":%d,"byte_size":%d}`, mustJSON(key), off, size))
}

func digitsPixels(t testing.TB) ([]byte, digitsRows) {
	rows := loadRows(t)
	var raw []byte
	for _, r := range rows.Pixels {
		for _, v := range r {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(v)))
		}
	}
	return raw, rows
}

func shmInferBody(region string, size, off int64) string {
	return fmt.Sprintf(`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_region":%q,"shared_memory_byte_size":%d,"shared_memory_offset":%d}}]}`, region, size, off)
}

// TestSharedMemoryDigits registers a real shared memory object, runs the
// digits model on pixels read from it through the real plugin, over
// loopback TCP and the unix socket, and checks the reference outputs;
// then status and unregister, as tritonclient calls them.
func TestSharedMemoryDigits(t *testing.T) {
	s, _ := digitsServer(t, Config{})
	tcp, unix, base := serve(t, s)
	raw, rows := digitsPixels(t)
	key, path := shmObject(t, 8192)
	// The region starts at 64 (not page-aligned), the tensor 36 bytes in.
	writeShm(t, path, 100, raw)
	if code, body := register(t, tcp, base, "pixels0", key, 64, 8000); code != 200 || body != "" {
		t.Fatalf("register: %d %q", code, body)
	}
	for name, c := range map[string]*http.Client{"tcp": tcp, "unix": unix} {
		code, _, body := post(t, c, base+"/v2/models/digits/infer", []byte(shmInferBody("pixels0", int64(len(raw)), 36)), nil)
		if code != 200 {
			t.Fatalf("%s: infer %d %s", name, code, body)
		}
		var r response
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Outputs) != 1 || len(r.Outputs[0].Data) != 80 {
			t.Fatalf("%s: response %s", name, body)
		}
		for i, p := range r.Outputs[0].Data {
			if want := rows.Probabilities[i/10][i%10]; math.Abs(p-want) > 1e-4 {
				t.Fatalf("%s: element %d = %g, want %g", name, i, p, want)
			}
		}
	}
	// A second region over the same object; the client rewrites it between
	// calls and the next call sees the new bytes.
	if code, body := register(t, unix, base, "whole", key, 0, 8192); code != 200 {
		t.Fatalf("register over the unix socket: %d %s", code, body)
	}
	code, body := shmCall(t, tcp, http.MethodGet, base+"/v2/systemsharedmemory/status", "")
	want := fmt.Sprintf(`[{"name":"pixels0","key":%q,"offset":64,"byte_size":8000},{"name":"whole","key":%q,"offset":0,"byte_size":8192}]`, key, key)
	if code != 200 || body != want {
		t.Fatalf("status: %d %s\nwant %s", code, body, want)
	}
	if code, body := shmCall(t, tcp, http.MethodGet, base+"/v2/systemsharedmemory/region/whole/status", ""); code != 200 || !strings.Contains(body, `"name":"whole"`) || strings.Contains(body, "pixels0") {
		t.Fatalf("region status: %d %s", code, body)
	}
	zero := make([]byte, len(raw))
	writeShm(t, path, 100, zero)
	code, _, out := post(t, tcp, base+"/v2/models/digits/infer", []byte(shmInferBody("whole", int64(len(raw)), 100)), nil)
	var r response
	json.Unmarshal(out, &r)
	if code != 200 || len(r.Outputs) != 1 || math.Abs(r.Outputs[0].Data[0]-rows.Probabilities[0][0]) < 1e-6 {
		t.Fatalf("after rewriting the region: %d %s (the old answer means stale bytes)", code, out)
	}
	// The output into a region of its own: the response names it, the
	// probabilities are in the object.
	okey, opath := shmObject(t, 4096)
	if code, body := register(t, tcp, base, "probs", okey, 0, 4096); code != 200 {
		t.Fatalf("register the output region: %d %s", code, body)
	}
	writeShm(t, path, 100, raw)
	outBody := strings.TrimSuffix(shmInferBody("pixels0", int64(len(raw)), 36), "}") +
		`,"outputs":[{"name":"probabilities","parameters":{"shared_memory_region":"probs","shared_memory_byte_size":400,"shared_memory_offset":8}}]}`
	code, _, out = post(t, tcp, base+"/v2/models/digits/infer", []byte(outBody), nil)
	wantResp := `"outputs":[{"name":"probabilities","datatype":"FP32","shape":[8,10],"parameters":{"shared_memory_region":"probs","shared_memory_byte_size":320,"shared_memory_offset":8}}]`
	if code != 200 || !strings.Contains(string(out), wantResp) {
		t.Fatalf("output to shared memory: %d %s\nwant %s", code, out, wantResp)
	}
	got, err := os.ReadFile(opath)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 80 {
		p := float64(math.Float32frombits(binary.LittleEndian.Uint32(got[8+4*i:])))
		if want := rows.Probabilities[i/10][i%10]; math.Abs(p-want) > 1e-4 {
			t.Fatalf("output region element %d = %g, want %g", i, p, want)
		}
	}
	small := strings.Replace(outBody, `"shared_memory_byte_size":400`, `"shared_memory_byte_size":100`, 1)
	if code, _, out := post(t, tcp, base+"/v2/models/digits/infer", []byte(small), nil); code != 400 || !strings.Contains(string(out), `output \"probabilities\": 320 bytes, shared_memory_byte_size is 100`) {
		t.Errorf("output region too small: %d %s", code, out)
	}
	beyond := strings.Replace(outBody, `"shared_memory_offset":8`, `"shared_memory_offset":4000`, 1)
	if code, _, out := post(t, tcp, base+"/v2/models/digits/infer", []byte(beyond), nil); code != 400 || !strings.Contains(string(out), `is beyond region \"probs\"`) {
		t.Errorf("output beyond its region: %d %s", code, out)
	}
	if _, m := get(t, tcp, base+"/v2"); !strings.Contains(fmt.Sprint(m["extensions"]), "system_shared_memory") {
		t.Errorf("server metadata does not advertise the extension: %v", m)
	}
	if code, body := shmCall(t, tcp, http.MethodPost, base+"/v2/systemsharedmemory/region/pixels0/unregister", ""); code != 200 {
		t.Fatalf("unregister: %d %s", code, body)
	}
	code, _, out = post(t, tcp, base+"/v2/models/digits/infer", []byte(shmInferBody("pixels0", int64(len(raw)), 36)), nil)
	if code != 400 || !strings.Contains(string(out), `region \"pixels0\" is not registered`) {
		t.Fatalf("infer after unregister: %d %s", code, out)
	}
	shmCall(t, tcp, http.MethodPost, base+"/v2/systemsharedmemory/unregister", "")
	if code, body := shmCall(t, tcp, http.MethodGet, base+"/v2/systemsharedmemory/status", ""); code != 200 || body != "[]" {
		t.Fatalf("status after unregistering all: %d %s", code, body)
	}
	s.shm.mu.Lock()
	defer s.shm.mu.Unlock()
	if s.shm.total != 0 {
		t.Errorf("%d bytes still counted", s.shm.total)
	}
}

// TestSharedMemoryHostile: every bad registration and every bad reference
// gets a 400 naming the problem and changes nothing registered.
func TestSharedMemoryHostile(t *testing.T) {
	s, _ := digitsServer(t, Config{SharedMemory: ShmLimits{MaxRegions: 2, MaxBytes: 16384}})
	tcp, _, base := serve(t, s)
	raw, _ := digitsPixels(t)
	key, path := shmObject(t, 8192)
	big, _ := shmObject(t, 32768)
	writeShm(t, path, 0, raw)
	os.Symlink(path, path+"-link")
	t.Cleanup(func() { os.Remove(path + "-link") })
	dir := path + "-dir"
	os.Mkdir(dir, 0o700)
	t.Cleanup(func() { os.Remove(dir) })
	if err := unix.Mkfifo(path+"-fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(path + "-fifo") })

	regs := []struct {
		region, key string
		off, size   int64
		want        string
	}{
		{"a", "/../etc/passwd", 0, 10, "path separator"},
		{"a", "..", 0, 10, "not a shared memory name"},
		{"a", "/", 0, 10, "not a shared memory name"},
		{"a", "/x/y", 0, 10, "path separator"},
		{"a", "/bad\x01", 0, 10, "control character"},
		{"a", "/flotilla-no-such-object", 0, 10, "no such file"},
		{"a", key + "-link", 0, 10, "too many levels of symbolic links"},
		{"a", key + "-dir", 0, 10, "is a directory"},
		{"a", key + "-fifo", 0, 10, "not a regular file"},
		{"a", key, 0, 8193, "beyond key"},
		{"a", key, 8000, 193, "beyond key"},
		{"a", key, -1, 10, "want offset ≥ 0"},
		{"a", key, 0, 0, "byte_size ≥ 1"},
		{"a", big, 0, 32768, "at most 16384"},
	}
	for _, c := range regs {
		code, body := register(t, tcp, base, c.region, c.key, c.off, c.size)
		if code != 400 || !strings.Contains(body, c.want) {
			t.Errorf("register %q at %d+%d: %d %s, want 400 with %q", c.key, c.off, c.size, code, body, c.want)
		}
	}
	for _, body := range []string{`{"key":"/x"}`, `{"byte_size":3}`, `not json`, `{"key":7,"byte_size":3}`} {
		if code, out := shmCall(t, tcp, http.MethodPost, base+"/v2/systemsharedmemory/region/a/register", body); code != 400 {
			t.Errorf("register %s: %d %s", body, code, out)
		}
	}
	// Another user's object is refused (needs root to make one here).
	if os.Geteuid() == 0 {
		other, opath := shmObject(t, 4096)
		os.Chown(opath, 12345, 12345)
		if code, body := register(t, tcp, base, "a", other, 0, 4096); code != 400 || !strings.Contains(body, "owned by uid 12345") {
			t.Errorf("another user's object: %d %s", code, body)
		}
	} else {
		t.Log("not root: the other owner case is not checked")
	}
	if code, body := shmCall(t, tcp, http.MethodGet, base+"/v2/systemsharedmemory/status", ""); body != "[]" {
		t.Fatalf("refused registrations left %d %s", code, body)
	}

	// Limits: two regions, 16 KiB.
	if code, body := register(t, tcp, base, "r1", key, 0, 8192); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := register(t, tcp, base, "r1", key, 0, 10); code != 400 || !strings.Contains(body, "already registered") {
		t.Errorf("twice: %d %s", code, body)
	}
	if code, body := register(t, tcp, base, "r2", big, 0, 8193); code != 400 || !strings.Contains(body, "would make 16385 registered") {
		t.Errorf("over the byte limit: %d %s", code, body)
	}
	if code, body := register(t, tcp, base, "r2", big, 0, 4096); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := register(t, tcp, base, "r3", big, 0, 1); code != 400 || !strings.Contains(body, "2 regions registered, at most 2") {
		t.Errorf("too many regions: %d %s", code, body)
	}
	if code, body := shmCall(t, tcp, http.MethodGet, base+"/v2/systemsharedmemory/region/r3/status", ""); code != 400 || !strings.Contains(body, `region \"r3\" is not registered`) {
		t.Errorf("status of an unknown region: %d %s", code, body)
	}

	url := base + "/v2/models/digits/infer"
	n := int64(len(raw))
	infers := []struct{ body, want string }{
		{shmInferBody("nope", n, 0), `region \"nope\" is not registered`},
		{shmInferBody("r1", n, 8192-n+4), `is beyond region \"r1\"'s 8192 bytes`},
		{shmInferBody("r1", n, 1<<62), "is beyond region"},
		{shmInferBody("r1", n-4, 0), "needs 2048 bytes, shared_memory_byte_size is 2044"},
		{shmInferBody("r1", -1, 0), "not a size"},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_region":7,"shared_memory_byte_size":2048}}]}`, "not a string"},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_region":"r1"}}]}`, "without shared_memory_byte_size"},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_byte_size":2048}}]}`, "without shared_memory_region"},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","data":[1],"parameters":{"shared_memory_region":"r1","shared_memory_byte_size":2048}}]}`, "with data or binary_data_size"},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_region":"r1","shared_memory_byte_size":2048}}],"outputs":[{"name":"probabilities","parameters":{"shared_memory_region":"r9","shared_memory_byte_size":320}}]}`, `output \"probabilities\": shared memory region \"r9\" is not registered`},
		{`{"inputs":[{"name":"pixels","shape":[8,64],"datatype":"FP32","parameters":{"shared_memory_region":"r1","shared_memory_byte_size":2048}}],"outputs":[{"name":"probabilities","parameters":{"shared_memory_byte_size":320}}]}`, `output \"probabilities\": shared_memory_byte_size without shared_memory_region`},
	}
	for _, c := range infers {
		code, _, out := post(t, tcp, url, []byte(c.body), nil)
		if code != 400 || !strings.Contains(string(out), c.want) {
			t.Errorf("%s: %d %s, want 400 with %q", c.body, code, out, c.want)
		}
	}
	if code, _, out := post(t, tcp, url, []byte(shmInferBody("r1", n, 0)), nil); code != 200 {
		t.Fatalf("a good call: %d %s", code, out)
	}
	// The owner shrinks the object under the mapping: refused by the size
	// check, not a SIGBUS.
	if err := os.Truncate(path, 1024); err != nil {
		t.Fatal(err)
	}
	if code, _, out := post(t, tcp, url, []byte(shmInferBody("r1", n, 0)), nil); code != 400 || !strings.Contains(string(out), "shrank to 1024 bytes") {
		t.Errorf("shrunk object: %d %s", code, out)
	}
	// And should it shrink between that check and the copy, the copy
	// faults into an error.
	s.shm.mu.Lock()
	r1 := s.shm.regions["r1"]
	s.shm.mu.Unlock()
	if err := copyGuarded(make([]byte, 8192), r1.data); err == nil || !strings.Contains(err.Error(), "faulted") {
		t.Errorf("copy from a shrunk mapping: %v", err)
	}
}

// TestShmUnregisterWhileReading: a region unregistered while a request
// reads it is unmapped only after that read.
func TestShmUnregisterWhileReading(t *testing.T) {
	g := newShmRegistry(ShmLimits{})
	key, path := shmObject(t, 4096)
	writeShm(t, path, 0, []byte("abcd"))
	if err := g.register("r", key, 0, 4096, []uint32{uint32(os.Geteuid())}); err != nil {
		t.Fatal(err)
	}
	r, ok := g.acquire("r") // a reader in flight
	if !ok {
		t.Fatal("not registered")
	}
	g.unregister("r")
	if _, err := g.read("x", "r", 0, 4); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Errorf("read of an unregistered region: %v", err)
	}
	got := make([]byte, 4)
	if err := copyGuarded(got, r.data); err != nil || string(got) != "abcd" || r.unmapped {
		t.Fatalf("the reader's mapping went away: %v %q", err, got)
	}
	g.release(r)
	if !r.unmapped {
		t.Error("not unmapped after the last reader")
	}
}

// BenchmarkShmRead is our side of an input in shared memory: the checks
// and the one copy of mobilenetv2's 602 KB input out of the mapping
// (copy-prealloc: the copy alone); decode-binary, beside it, takes the same input from a request body
// already read (the HTTP path then still moves the body over the socket).
func BenchmarkShmRead(b *testing.B) {
	const size = 4 * 3 * 224 * 224
	g := newShmRegistry(ShmLimits{})
	key, path := shmObject(b, size)
	writeShm(b, path, 0, make([]byte, size))
	if err := g.register("r", key, 0, size, []uint32{uint32(os.Geteuid())}); err != nil {
		b.Fatal(err)
	}
	defer g.closeAll()
	ins := []runtime.TensorInfo{{Name: "image", DType: runtime.Float32, Shape: []int64{-1, 3, 224, 224}}}
	hdr := fmt.Sprintf(`{"inputs":[{"name":"image","shape":[1,3,224,224],"datatype":"FP32","parameters":{"shared_memory_region":"r","shared_memory_byte_size":%d}}]}`, size)
	b.Run("shm", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			d, err := decodeRequest([]byte(hdr), nil, ins, nil, Limits{}.withDefaults())
			if err != nil {
				b.Fatal(err)
			}
			if err := g.resolveShm(d); err != nil || len(d.inputs[0].Data) != size {
				b.Fatal(err)
			}
			recycle(d) // as the handler does once it has answered
		}
	})
	// The copy alone, into a buffer allocated once.
	dst := make([]byte, size)
	b.Run("copy-prealloc", func(b *testing.B) {
		b.SetBytes(size)
		r := g.regions["r"]
		for b.Loop() {
			if err := copyGuarded(dst, r.data); err != nil {
				b.Fatal(err)
			}
		}
	})
	bhdr := fmt.Sprintf(`{"inputs":[{"name":"image","shape":[1,3,224,224],"datatype":"FP32","parameters":{"binary_data_size":%d}}]}`, size)
	body := make([]byte, size)
	b.Run("decode-binary", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			d, err := decodeRequest([]byte(bhdr), body, ins, nil, Limits{}.withDefaults())
			if err != nil || len(d.inputs[0].Data) != size {
				b.Fatal(err)
			}
		}
	})
}

// TestPeerUID: on a unix socket the caller's uid is recorded for the
// owner check; on TCP nothing is.
func TestPeerUID(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		if c, err := net.Dial("unix", sock); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if u, ok := peerUID(context.Background(), c).Value(peerKey{}).(uint32); !ok || u != uint32(os.Getuid()) {
		t.Errorf("unix peer uid %v %v, want %d", u, ok, os.Getuid())
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tl.Close()
	go func() {
		if c, err := net.Dial("tcp", tl.Addr().String()); err == nil {
			defer c.Close()
			c.Read(make([]byte, 1))
		}
	}()
	tc, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if v := peerUID(context.Background(), tc).Value(peerKey{}); v != nil {
		t.Errorf("tcp peer uid %v", v)
	}
}
