package inferapi

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/runtime"
)

const digitsBundle = "../lifecycle/testdata/digits"

type digitsRows struct {
	Pixels        [][]float64 `json:"pixels"`
	Probabilities [][]float64 `json:"probabilities"`
}

func loadRows(t testing.TB) digitsRows {
	t.Helper()
	b, err := os.ReadFile(digitsBundle + "/rows.json")
	if err != nil {
		t.Fatal(err)
	}
	var r digitsRows
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

type response struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Error        string `json:"error"`
	Outputs      []struct {
		Name       string            `json:"name"`
		Datatype   string            `json:"datatype"`
		Shape      []int64           `json:"shape"`
		Data       []float64         `json:"data"`
		Parameters map[string]uint64 `json:"parameters"`
	} `json:"outputs"`
}

func post(t testing.TB, c *http.Client, url string, body []byte, hdr map[string]string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

func get(t testing.TB, c *http.Client, url string) (int, map[string]any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m
}

// digitsServer serves the real digits model through the real lifecycle
// and ONNX plugin.
func digitsServer(t testing.TB, cfg Config) (*Server, *lifecycle.Lifecycle) {
	l := activate(t, onnxPlugin(t), digitsBundle)
	cfg.Models = l
	return New(cfg), l
}

// TestDigitsOverLoopbackAndUnixSocket runs KServe-shaped requests (nested
// data, as the docs' clients send) through both transports and checks the
// probabilities against the reference outputs.
func TestDigitsOverLoopbackAndUnixSocket(t *testing.T) {
	s, l := digitsServer(t, Config{})
	tcp, unix, base := serve(t, s)
	rows := loadRows(t)
	req, _ := json.Marshal(map[string]any{"id": "req-1", "inputs": []any{map[string]any{
		"name": "pixels", "shape": []int{len(rows.Pixels), 64}, "datatype": "FP32", "data": rows.Pixels}}})
	for name, c := range map[string]*http.Client{"tcp": tcp, "unix": unix} {
		for _, path := range []string{"/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"} {
			code, hdr, body := post(t, c, base+path, req, nil)
			if code != http.StatusOK || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("%s %s: %d %s", name, path, code, body)
			}
			var r response
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
			if r.ModelName != "digits" || r.ModelVersion != "1" || r.ID != "req-1" || len(r.Outputs) != 1 ||
				r.Outputs[0].Name != "probabilities" || r.Outputs[0].Datatype != "FP32" || r.Outputs[0].Shape[0] != 8 {
				t.Fatalf("%s: response %+v", name, r)
			}
			for i, p := range r.Outputs[0].Data {
				if want := rows.Probabilities[i/10][i%10]; math.Abs(p-want) > 1e-4 {
					t.Fatalf("%s: element %d = %g, want %g", name, i, p, want)
				}
			}
		}
	}
	if snap := l.Stats().Model("digits").Snapshot(); snap.Total.Requests != 4 {
		t.Errorf("the lifecycle counted %d requests, want 4", snap.Total.Requests)
	}
	for path, want := range map[string]int{
		"/v2/health/live": 200, "/v2/health/ready": 200, "/v2/models/digits/ready": 200,
		"/v2/models/digits/versions/1/ready": 200, "/v2/models/digits/versions/1.0.0": 200,
		"/v2/models/digits/versions/7": 404, "/v2/models/nope": 404, "/v2/models/nope/ready": 404,
	} {
		if code, m := get(t, tcp, base+path); code != want {
			t.Errorf("GET %s = %d %v, want %d", path, code, m, want)
		}
	}
	code, meta := get(t, unix, base+"/v2/models/digits")
	in, _ := meta["inputs"].([]any)
	if code != 200 || meta["platform"] != "onnx" || len(in) != 1 || in[0].(map[string]any)["datatype"] != "FP32" {
		t.Errorf("metadata: %d %v", code, meta)
	}
	if code, m := get(t, tcp, base+"/v2"); code != 200 || m["name"] != "flotilla-agent" {
		t.Errorf("server metadata: %d %v", code, m)
	}
}

// TestBadRequests names the problem in every 400, refuses oversized bodies
// with 413 (announced or not), and unknown models with 404.
func TestBadRequests(t *testing.T) {
	s, _ := digitsServer(t, Config{MaxBodyBytes: 64 << 10})
	tcp, _, base := serve(t, s)
	url := base + "/v2/models/digits/infer"
	px := strings.TrimSuffix(strings.Repeat("0.5,", 64), ",")
	cases := []struct {
		name, body string
		code       int
		want       string
	}{
		{"not json", `{"inputs": [`, 400, "not a valid inference request"},
		{"no inputs", `{"inputs": []}`, 400, "no inputs"},
		{"wrong name", `{"inputs":[{"name":"image","shape":[1,64],"datatype":"FP32","data":[` + px + `]}]}`, 400, `unknown input "image"`},
		{"wrong dtype", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP64","data":[` + px + `]}]}`, 400, "datatype FP64, the model wants FP32"},
		{"bad dtype", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP128","data":[` + px + `]}]}`, 400, `unknown datatype "FP128"`},
		{"wrong shape", `{"inputs":[{"name":"pixels","shape":[1,63],"datatype":"FP32","data":[` + px + `]}]}`, 400, "shape [1 63], the model wants [-1 64]"},
		{"wrong rank", `{"inputs":[{"name":"pixels","shape":[64],"datatype":"FP32","data":[` + px + `]}]}`, 400, "the model wants [-1 64]"},
		{"too few", `{"inputs":[{"name":"pixels","shape":[2,64],"datatype":"FP32","data":[` + px + `]}]}`, 400, "holds 128 elements, data has 64"},
		{"too many", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[` + px + `,1]}]}`, 400, "data has more"},
		{"not a number", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":["x"` + strings.Repeat(",1", 63) + `]}]}`, 400, "a string in FP32 data"},
		{"negative dim", `{"inputs":[{"name":"pixels","shape":[-1,64],"datatype":"FP32","data":[` + px + `]}]}`, 400, "negative dimension"},
		{"huge shape", `{"inputs":[{"name":"pixels","shape":[99999999999,64],"datatype":"FP32","data":[1]}]}`, 400, "more than"},
		{"twice", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[` + px + `]},{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[` + px + `]}]}`, 400, "given twice"},
		{"unknown output", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[` + px + `]}],"outputs":[{"name":"logits"}]}`, 400, `unknown output "logits"`},
		{"no data", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32"}]}`, 400, "data is missing"},
		{"binary size beyond body", `{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}`, 400, "binary_data_size 256, only 0 bytes left"},
	}
	for _, c := range cases {
		code, _, body := post(t, tcp, url, []byte(c.body), nil)
		var r response
		json.Unmarshal(body, &r)
		if code != c.code || !strings.Contains(r.Error, c.want) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, code, r.Error, c.code, c.want)
		}
	}
	if code, _, _ := post(t, tcp, base+"/v2/models/nope/infer", []byte(`{}`), nil); code != 404 {
		t.Errorf("unknown model: %d", code)
	}
	big := bytes.Repeat([]byte(" "), 65<<10)
	if code, _, body := post(t, tcp, url, big, nil); code != http.StatusRequestEntityTooLarge {
		t.Errorf("announced oversized body: %d %s", code, body)
	}
	// Without a Content-Length (chunked) the limit holds while reading.
	req, _ := http.NewRequest(http.MethodPost, url, io.MultiReader(bytes.NewReader(big), strings.NewReader("x")))
	req.ContentLength = -1
	resp, err := tcp.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversized body: %d", resp.StatusCode)
	}
	if code, _, body := post(t, tcp, url, []byte(`{}`), map[string]string{headerLength: "99"}); code != 400 || !bytes.Contains(body, []byte(headerLength)) {
		t.Errorf("bad header length: %d %s", code, body)
	}
}

// TestBinaryTensorExtension sends the pixels as raw FP32 and asks for the
// probabilities back as binary.
func TestBinaryTensorExtension(t *testing.T) {
	s, _ := digitsServer(t, Config{})
	tcp, _, base := serve(t, s)
	rows := loadRows(t)
	var raw []byte
	for _, r := range rows.Pixels {
		for _, v := range r {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(v)))
		}
	}
	hdr, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "pixels", "shape": []int{8, 64}, "datatype": "FP32",
		"parameters": map[string]any{"binary_data_size": len(raw)}}}, "outputs": []any{map[string]any{"name": "probabilities", "parameters": map[string]any{"binary_data": true}}}})
	code, h, body := post(t, tcp, base+"/v2/models/digits/infer", append(hdr, raw...), map[string]string{headerLength: strconv.Itoa(len(hdr))})
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	n, err := strconv.Atoi(h.Get(headerLength))
	if err != nil || n > len(body) {
		t.Fatalf("response %s %q", headerLength, h.Get(headerLength))
	}
	var r response
	if err := json.Unmarshal(body[:n], &r); err != nil {
		t.Fatal(err)
	}
	out := body[n:]
	if len(r.Outputs) != 1 || r.Outputs[0].Parameters["binary_data_size"] != 320 || len(out) != 320 {
		t.Fatalf("response %+v, %d binary bytes", r, len(out))
	}
	for i := range 80 {
		got := float64(math.Float32frombits(binary.LittleEndian.Uint32(out[4*i:])))
		if want := rows.Probabilities[i/10][i%10]; math.Abs(got-want) > 1e-4 {
			t.Fatalf("element %d = %g, want %g", i, got, want)
		}
	}
}

// TestQueueLimits holds the model's only slot: the next call waits in the
// queue and gets 503 after QueueTimeout, one beyond the queue gets 429 at
// once, both with Retry-After; another model is not held up.
func TestQueueLimits(t *testing.T) {
	s, _ := digitsServer(t, Config{Concurrency: 1, MaxQueue: 1, QueueTimeout: 300 * time.Millisecond})
	tcp, _, base := serve(t, s)
	lim := s.limiter("digits")
	if err := lim.acquire(context.Background(), time.Second); err != nil {
		t.Fatal(err)
	}
	px := strings.TrimSuffix(strings.Repeat("0.5,", 64), ",")
	body := []byte(`{"inputs":[{"name":"pixels","shape":[1,64],"datatype":"FP32","data":[` + px + `]}]}`)
	type result struct {
		code  int
		retry string
		took  time.Duration
	}
	queued := make(chan result, 1)
	go func() {
		start := time.Now()
		code, h, _ := post(t, tcp, base+"/v2/models/digits/infer", body, nil)
		queued <- result{code, h.Get("Retry-After"), time.Since(start)}
	}()
	for lim.waiting.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	code, h, _ := post(t, tcp, base+"/v2/models/digits/infer", body, nil)
	if code != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Errorf("beyond the queue: %d, Retry-After %q", code, h.Get("Retry-After"))
	}
	if code, _ := get(t, tcp, base+"/v2/health/live"); code != 200 {
		t.Errorf("live while the model is busy: %d", code)
	}
	r := <-queued
	if r.code != http.StatusServiceUnavailable || r.retry == "" || r.took < 300*time.Millisecond {
		t.Errorf("queued: %+v", r)
	}
	lim.release()
	if code, _, b := post(t, tcp, base+"/v2/models/digits/infer", body, nil); code != 200 {
		t.Errorf("after release: %d %s", code, b)
	}
}

func TestLimiterCancel(t *testing.T) {
	l := &limiter{slots: make(chan struct{}, 1), maxQueue: 4}
	l.acquire(context.Background(), time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.acquire(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
	if l.waiting.Load() != 0 {
		t.Errorf("waiting %d after the cancelled wait", l.waiting.Load())
	}
}

var _ Models = (*lifecycle.Lifecycle)(nil)

func exampleSchema() (ins, outs []runtime.TensorInfo) {
	return []runtime.TensorInfo{{Name: "input0", DType: runtime.Uint32, Shape: []int64{-1, 2}}, {Name: "input1", DType: runtime.Bool, Shape: []int64{3}}},
		[]runtime.TensorInfo{{Name: "output0", DType: runtime.Float32, Shape: []int64{-1, 2}}}
}

// TestKServeDocumentedExamples decodes the protocol documentation's
// request and encodes its response (testdata/kserve, see README there).
func TestKServeDocumentedExamples(t *testing.T) {
	req, err := os.ReadFile("testdata/kserve/infer_request.json")
	if err != nil {
		t.Fatal(err)
	}
	ins, outs := exampleSchema()
	// As documented, input1 declares 3 elements and carries 1.
	if _, err := decodeRequest(req, nil, ins, outs, Limits{}.withDefaults()); !errors.Is(err, errBadRequest) ||
		!strings.Contains(err.Error(), `input "input1": shape [3] holds 3 elements, data has 1`) {
		t.Fatalf("documented request: %v", err)
	}
	fixed := bytes.Replace(req, []byte(`"data" : [ true ]`), []byte(`"data" : [ true, false, true ]`), 1)
	d, err := decodeRequest(fixed, nil, ins, outs, Limits{}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	if d.id != "42" || len(d.inputs) != 2 || len(d.outputs) != 1 || d.outputs[0].name != "output0" ||
		!bytes.Equal(d.inputs[0].Data, []byte{1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0}) ||
		!bytes.Equal(d.inputs[1].Data, []byte{1, 0, 1}) {
		t.Fatalf("decoded %+v", d)
	}
	for _, in := range d.inputs {
		if err := in.Validate(); err != nil {
			t.Error(err)
		}
	}

	wantRaw, err := os.ReadFile("testdata/kserve/infer_response.json")
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	for _, f := range []float32{1.0, 1.1, 2.0, 2.1, 3.0, 3.1} {
		data = binary.LittleEndian.AppendUint32(data, math.Float32bits(f))
	}
	hdr, bin, err := encodeResponse("mymodel", "1", d, []runtime.Tensor{{Name: "output0", DType: runtime.Float32, Shape: []int64{3, 2}, Data: data}})
	if err != nil || bin != nil {
		t.Fatal(err, bin)
	}
	var got, want map[string]any
	if err := json.Unmarshal(hdr, &got); err != nil {
		t.Fatalf("%v: %s", err, hdr)
	}
	json.Unmarshal(wantRaw, &want)
	gb, _ := json.Marshal(map[string]any{"id": got["id"], "outputs": got["outputs"]})
	wb, _ := json.Marshal(want)
	if !bytes.Equal(gb, wb) {
		t.Errorf("response\n got %s\nwant %s", gb, wb)
	}
}

// TestEveryDatatypeRoundTrips decodes JSON data of every datatype and
// encodes it back.
func TestEveryDatatypeRoundTrips(t *testing.T) {
	for name, dt := range dtypeByName {
		data := `[[1, 0], [2, 3]]`
		switch dt {
		case runtime.Bool:
			data = `[[true, false], [false, true]]`
		case runtime.String:
			data = `[["a", "b\"c"], ["ü", ""]]`
		case runtime.Float32, runtime.Float64, runtime.Float16, runtime.BFloat16:
			data = `[[1.5, -0.25], [2, 3e2]]`
		case runtime.Int8, runtime.Int16, runtime.Int32, runtime.Int64:
			data = `[[1, -2], [3, -4]]`
		}
		ins := []runtime.TensorInfo{{Name: "x", DType: dt, Shape: []int64{2, 2}}}
		d, err := decodeRequest([]byte(`{"inputs":[{"name":"x","shape":[2,2],"datatype":"`+name+`","data":`+data+`}]}`), nil, ins, ins, Limits{}.withDefaults())
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := d.inputs[0].Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		hdr, _, err := encodeResponse("m", "1", d, d.inputs)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		var r struct{ Outputs []struct{ Data []any } }
		if err := json.Unmarshal(hdr, &r); err != nil {
			t.Errorf("%s: %v in %s", name, err, hdr)
			continue
		}
		var want []any
		json.Unmarshal([]byte(strings.NewReplacer("[[", "[", "]]", "]", "], [", ", ").Replace(data)), &want)
		if gb, wb := mustJSON(r.Outputs[0].Data), mustJSON(want); gb != wb {
			t.Errorf("%s: round trip %s, want %s", name, gb, wb)
		}
	}
	// Out of range and wrong kinds name the value.
	for dt, bad := range map[string]string{"UINT8": "256", "INT8": "-129", "INT32": "1.5", "UINT32": "-1", "BOOL": "1"} {
		ins := []runtime.TensorInfo{{Name: "x", DType: dtypeByName[dt], Shape: []int64{1}}}
		_, err := decodeRequest([]byte(`{"inputs":[{"name":"x","shape":[1],"datatype":"`+dt+`","data":[`+bad+`]}]}`), nil, ins, ins, Limits{}.withDefaults())
		if !errors.Is(err, errBadRequest) || !strings.Contains(err.Error(), strconv.Quote(bad)) {
			t.Errorf("%s %s: %v", dt, bad, err)
		}
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestHalfConversions(t *testing.T) {
	for _, f := range []float32{0, 1, -2, 0.5, 65504, 6.1035156e-05, 5.9604645e-08, 1.5, -0.25} {
		if got := halfToFloat(floatToHalf(f)); got != f {
			t.Errorf("%v → %#x → %v", f, floatToHalf(f), got)
		}
	}
	if h := floatToHalf(1e6); h != 0x7c00 {
		t.Errorf("overflow: %#x", h)
	}
}
