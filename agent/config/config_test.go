package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadFileThenEnv(t *testing.T) {
	p := write(t, `
data_dir = "/tmp/x"
device_id = "press-17"
server = "https://cp:8443"
enrol_token = "from-file"
heartbeat_interval = "10s"
[labels]
site = "plant-3"
`)
	env := map[string]string{"FLOTILLA_ENROL_TOKEN": "from-env", "FLOTILLA_LABELS": "line=a, shift=night"}
	fc, err := LoadConfig(p, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if fc.DataDir != "/tmp/x" || fc.DeviceID != "press-17" || fc.EnrolToken != "from-env" ||
		fc.HeartbeatInterval != 10*time.Second || fc.Labels["site"] != "plant-3" || fc.Labels["shift"] != "night" {
		t.Errorf("config = %+v", fc)
	}
	if s := fc.String(); strings.Contains(s, "from-env") {
		t.Errorf("String shows the token: %s", s)
	}
	ac, err := fc.Agent("")
	if err != nil || ac.ServerURL != "https://cp:8443" || ac.EnrolToken != "from-env" {
		t.Errorf("Agent() = %+v, %v", ac, err)
	}
}

func TestUnknownKeysRejected(t *testing.T) {
	p := write(t, "device_id = \"a\"\nserver_url = \"https://x\"\n[labels]\nk = \"v\"\n[extra]\nx = 1\n")
	_, err := LoadConfig(p, nil)
	if err == nil || !strings.Contains(err.Error(), "server_url") || !strings.Contains(err.Error(), "extra") {
		t.Errorf("LoadConfig = %v, want unknown keys server_url and extra", err)
	}
}

func TestDefaultsAndBadEnv(t *testing.T) {
	fc, err := LoadConfig("", nil)
	if err != nil || fc.DataDir != DefaultDataDir {
		t.Errorf("defaults = %+v, %v", fc, err)
	}
	_, err = LoadConfig("", func(k string) string {
		if k == "FLOTILLA_HEARTBEAT_INTERVAL" {
			return "soon"
		}
		return ""
	})
	if err == nil {
		t.Error("bad duration accepted")
	}
	if _, err := LoadConfig(write(t, "device_id = 3\n"), nil); err == nil {
		t.Error("wrong type accepted")
	}
}

// chunk_quota_bytes reaches agent.Config; 0 leaves agent/chunkstore's
// default; under 1 MiB is refused.
func TestChunkQuotaKey(t *testing.T) {
	fc, err := LoadConfig(write(t, "chunk_quota_bytes = 268435456\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := fc.Agent("")
	if err != nil || ac.ChunkQuotaBytes != 256<<20 {
		t.Fatalf("chunk quota %d, %v; want %d", ac.ChunkQuotaBytes, err, 256<<20)
	}
	if !strings.Contains(fc.String(), "chunk_quota_bytes=268435456") {
		t.Errorf("String() = %s", fc)
	}
	if ac, err := (FileConfig{}).Agent(""); err != nil || ac.ChunkQuotaBytes != 0 {
		t.Fatalf("absent chunk_quota_bytes: %d, %v; want 0 (the default)", ac.ChunkQuotaBytes, err)
	}
	for _, bad := range []string{"chunk_quota_bytes = 1000\n", "chunk_quota_bytes = -1\n"} {
		fc, err := LoadConfig(write(t, bad), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.Agent(""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The telemetry keys reach agent.Config; zero leaves agent/metrics'
// defaults; out-of-range values are refused.
func TestTelemetryKeys(t *testing.T) {
	fc, err := LoadConfig(write(t, "metrics_window = \"30s\"\nmetrics_quota_bytes = 8388608\ntelemetry_budget_bytes_per_day = 1000000\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := fc.Agent("")
	if err != nil {
		t.Fatal(err)
	}
	if tc := ac.Telemetry; tc.Window != 30*time.Second || tc.QuotaBytes != 8<<20 || tc.BudgetBytesPerDay != 1000000 {
		t.Fatalf("telemetry config %+v", tc)
	}
	if !strings.Contains(fc.String(), "metrics_window=30s") {
		t.Errorf("String() = %s", fc)
	}
	for _, bad := range []string{"metrics_window = \"10ms\"\n", "metrics_window = \"48h\"\n",
		"metrics_quota_bytes = 1000\n", "telemetry_budget_bytes_per_day = -1\n"} {
		fc, err := LoadConfig(write(t, bad), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.Agent(""); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestInferKeys: the inference API's limits reach agent/inferapi's
// Config; out of range, the agent refuses to start naming the key; a
// change is logged as needing a restart.
func TestInferKeys(t *testing.T) {
	fc, err := LoadConfig(write(t, `infer_max_body_bytes = 1048576
infer_concurrency = 2
infer_max_queue = 8
infer_queue_timeout = "500ms"
infer_shm_max_regions = 4
infer_shm_max_bytes = 67108864
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := fc.Agent("")
	if err != nil {
		t.Fatal(err)
	}
	ic := ac.Models.Infer
	if ic.MaxBodyBytes != 1<<20 || ic.Concurrency != 2 || ic.MaxQueue != 8 || ic.QueueTimeout != 500*time.Millisecond ||
		ic.SharedMemory.MaxRegions != 4 || ic.SharedMemory.MaxBytes != 64<<20 {
		t.Fatalf("inference API config %+v", ic)
	}
	if !strings.Contains(fc.String(), "infer_shm_max_regions=4") {
		t.Errorf("String() = %s", fc)
	}
	for _, bad := range []struct{ body, key string }{
		{"infer_max_body_bytes = 100\n", "infer_max_body_bytes"},
		{"infer_max_body_bytes = 4294967296\n", "infer_max_body_bytes"},
		{"infer_concurrency = -1\n", "infer_concurrency"},
		{"infer_max_queue = 1000000\n", "infer_max_queue"},
		{"infer_queue_timeout = \"-1s\"\n", "infer_queue_timeout"},
		{"infer_shm_max_regions = 100000\n", "infer_shm_max_regions"},
		{"infer_shm_max_bytes = 10\n", "infer_shm_max_bytes"},
	} {
		fc, err := LoadConfig(write(t, bad.body), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fc.Agent(""); err == nil || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("%q: err %v, want one naming %s", bad.body, err, bad.key)
		}
	}
	changed := fc
	changed.InferShmMaxRegions = 8
	d := Diff(fc, changed)
	if len(d) != 1 || d[0].Key != "infer_shm_max_regions" || d[0].Live || d[0].Old != "4" || d[0].New != "8" {
		t.Fatalf("Diff = %+v", d)
	}
}
