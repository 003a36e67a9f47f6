// Package config loads the agent's configuration for flotilla-agent run:
// a TOML file, then FLOTILLA_* environment variables over it; the command
// applies its flags last. Unknown keys in the file are an error, so a typo
// does not silently fall back to a default. Secrets (the enrol token) are
// never printed: FileConfig's String redacts them.
//
// Example file:
//
//	data_dir       = "/var/lib/flotilla-agent"
//	device_id      = "press-17"
//	server         = "https://flotilla.example:8443"
//	enrol_token    = "…"
//	ca_fingerprint = "AB:CD:…"
//	heartbeat_interval = "30s"
//	log_level      = "info"
//
//	# models (all optional; the defaults shown)
//	plugin_dir     = ""                 # "" = next to the binary, else /usr/lib/flotilla/plugins
//	ort_lib        = ""                 # FLOTILLA_ORT_LIB for the onnx plugin
//	infer_addr     = "127.0.0.1:8580"   # loopback only; "off" = no TCP listener
//	infer_socket   = ""                 # "" = <data_dir>/infer.sock; "off" = none
//	sideload_dir   = ""                 # "" = <data_dir>/sideload; "off" = none
//	sideload_waive_director = false     # local authorisation to sideload without the director
//	chunk_quota_bytes = 1073741824      # downloaded bundles' chunk store cap (1 GiB)
//
//	# telemetry (all optional; the defaults shown)
//	metrics_window = "60s"              # drift summary window, at least 1s
//	metrics_quota_bytes = 67108864      # metrics database cap (64 MiB)
//	telemetry_budget_bytes_per_day = 0  # metered links: 0 = no budget
//
//	[labels]
//	site = "plant-3"
//
// Watch follows the file: heartbeat_interval, labels and log_level apply
// at once (Live, Diff); any other change is logged as needing a restart.
package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// DefaultDataDir is the data folder when none is configured.
const DefaultDataDir = "/var/lib/flotilla-agent"

// FileConfig is the agent's configuration as an operator writes it.
type FileConfig struct {
	DataDir           string            `toml:"data_dir"`
	DeviceID          string            `toml:"device_id"`
	Server            string            `toml:"server"`
	EnrolToken        string            `toml:"enrol_token"`
	CAFile            string            `toml:"ca_file"`
	CAFingerprint     string            `toml:"ca_fingerprint"`
	MQTTURL           string            `toml:"mqtt_url"`
	TopicPrefix       string            `toml:"topic_prefix"`
	HeartbeatInterval time.Duration     `toml:"heartbeat_interval"`
	LogLevel          string            `toml:"log_level"`
	Labels            map[string]string `toml:"labels"`

	PluginDir             string `toml:"plugin_dir"`
	ORTLib                string `toml:"ort_lib"`
	InferAddr             string `toml:"infer_addr"`
	InferSocket           string `toml:"infer_socket"`
	SideloadDir           string `toml:"sideload_dir"`
	SideloadWaiveDirector bool   `toml:"sideload_waive_director"`
	ChunkQuotaBytes       int64  `toml:"chunk_quota_bytes"`

	// The local inference API's limits (0: agent/inferapi's default).
	InferMaxBodyBytes  int64         `toml:"infer_max_body_bytes"`
	InferConcurrency   int           `toml:"infer_concurrency"`
	InferMaxQueue      int           `toml:"infer_max_queue"`
	InferQueueTimeout  time.Duration `toml:"infer_queue_timeout"`
	InferShmMaxRegions int           `toml:"infer_shm_max_regions"`
	InferShmMaxBytes   int64         `toml:"infer_shm_max_bytes"`

	MetricsWindow              time.Duration `toml:"metrics_window"`
	MetricsQuotaBytes          int64         `toml:"metrics_quota_bytes"`
	TelemetryBudgetBytesPerDay int64         `toml:"telemetry_budget_bytes_per_day"`
}

// Off turns off a listener or folder that has a default (infer_addr,
// infer_socket, sideload_dir).
const Off = "off"

// DefaultPluginDir is where runtime plugins are looked for when
// plugin_dir is empty and none sits next to the agent binary.
const DefaultPluginDir = "/usr/lib/flotilla/plugins"

// LoadConfig reads the TOML file at path ("" for none), then overrides it
// with the environment read through env (nil for none):
//
//	FLOTILLA_DATA_DIR, FLOTILLA_DEVICE_ID, FLOTILLA_SERVER, FLOTILLA_ENROL_TOKEN,
//	FLOTILLA_CA_FILE, FLOTILLA_CA_FINGERPRINT, FLOTILLA_MQTT_URL,
//	FLOTILLA_TOPIC_PREFIX, FLOTILLA_HEARTBEAT_INTERVAL (a Go duration),
//	FLOTILLA_LOG_LEVEL, FLOTILLA_LABELS ("k=v,k2=v2", added to the file's),
//	FLOTILLA_PLUGIN_DIR, FLOTILLA_ORT_LIB, FLOTILLA_INFER_ADDR,
//	FLOTILLA_INFER_SOCKET, FLOTILLA_SIDELOAD_DIR,
//	FLOTILLA_SIDELOAD_WAIVE_DIRECTOR ("true" or "false")
func LoadConfig(path string, env func(string) string) (FileConfig, error) {
	var fc FileConfig
	if path != "" {
		md, err := toml.DecodeFile(path, &fc)
		if err != nil {
			return FileConfig{}, fmt.Errorf("config %s: %w", path, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			sort.Strings(keys)
			return FileConfig{}, fmt.Errorf("config %s: unknown keys: %s", path, strings.Join(keys, ", "))
		}
	}
	if env != nil {
		if err := fc.applyEnv(env); err != nil {
			return FileConfig{}, err
		}
	}
	if fc.DataDir == "" {
		fc.DataDir = DefaultDataDir
	}
	return fc, nil
}

func (fc *FileConfig) applyEnv(env func(string) string) error {
	for name, dst := range map[string]*string{
		"FLOTILLA_DATA_DIR":       &fc.DataDir,
		"FLOTILLA_DEVICE_ID":      &fc.DeviceID,
		"FLOTILLA_SERVER":         &fc.Server,
		"FLOTILLA_ENROL_TOKEN":    &fc.EnrolToken,
		"FLOTILLA_CA_FILE":        &fc.CAFile,
		"FLOTILLA_CA_FINGERPRINT": &fc.CAFingerprint,
		"FLOTILLA_MQTT_URL":       &fc.MQTTURL,
		"FLOTILLA_TOPIC_PREFIX":   &fc.TopicPrefix,
		"FLOTILLA_LOG_LEVEL":      &fc.LogLevel,
		"FLOTILLA_PLUGIN_DIR":     &fc.PluginDir,
		"FLOTILLA_ORT_LIB":        &fc.ORTLib,
		"FLOTILLA_INFER_ADDR":     &fc.InferAddr,
		"FLOTILLA_INFER_SOCKET":   &fc.InferSocket,
		"FLOTILLA_SIDELOAD_DIR":   &fc.SideloadDir,
	} {
		if v := env(name); v != "" {
			*dst = v
		}
	}
	if v := env("FLOTILLA_HEARTBEAT_INTERVAL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("FLOTILLA_HEARTBEAT_INTERVAL: %q is not a duration", v)
		}
		fc.HeartbeatInterval = d
	}
	if v := env("FLOTILLA_SIDELOAD_WAIVE_DIRECTOR"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("FLOTILLA_SIDELOAD_WAIVE_DIRECTOR: %q is not true or false", v)
		}
		fc.SideloadWaiveDirector = b
	}
	if v := env("FLOTILLA_LABELS"); v != "" {
		for kv := range strings.SplitSeq(v, ",") {
			if err := fc.AddLabel(strings.TrimSpace(kv)); err != nil {
				return fmt.Errorf("FLOTILLA_LABELS: %w", err)
			}
		}
	}
	return nil
}

// AddLabel adds a label given as "key=value".
func (fc *FileConfig) AddLabel(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return fmt.Errorf("label %q is not key=value", kv)
	}
	if fc.Labels == nil {
		fc.Labels = map[string]string{}
	}
	fc.Labels[k] = v
	return nil
}

// Agent returns the agent configuration, models included; the caller
// adds what is not configured in a file (logger, clock, version).
// exeDir is the folder of the agent binary, where plugins are looked for
// first when plugin_dir is empty ("" to skip).
func (fc FileConfig) Agent(exeDir string) (agent.Config, error) {
	if fc.HeartbeatInterval < 0 {
		return agent.Config{}, errors.New("config: heartbeat_interval is negative")
	}
	if fc.MetricsWindow != 0 && (fc.MetricsWindow < MinMetricsWindow || fc.MetricsWindow > MaxMetricsWindow) {
		return agent.Config{}, fmt.Errorf("config: metrics_window %s is outside %s..%s", fc.MetricsWindow, MinMetricsWindow, MaxMetricsWindow)
	}
	if fc.MetricsQuotaBytes != 0 && fc.MetricsQuotaBytes < MinMetricsQuota {
		return agent.Config{}, fmt.Errorf("config: metrics_quota_bytes %d is under %d", fc.MetricsQuotaBytes, MinMetricsQuota)
	}
	if fc.ChunkQuotaBytes != 0 && fc.ChunkQuotaBytes < MinChunkQuota {
		return agent.Config{}, fmt.Errorf("config: chunk_quota_bytes %d is under %d", fc.ChunkQuotaBytes, MinChunkQuota)
	}
	if fc.TelemetryBudgetBytesPerDay < 0 {
		return agent.Config{}, errors.New("config: telemetry_budget_bytes_per_day is negative")
	}
	if err := fc.checkInfer(); err != nil {
		return agent.Config{}, err
	}
	orDefault := func(v, def string) string {
		switch v {
		case Off:
			return ""
		case "":
			return def
		}
		return v
	}
	models := &agent.ModelsConfig{
		PluginDir:             fc.PluginDir,
		ORTLib:                fc.ORTLib,
		InferAddr:             orDefault(fc.InferAddr, agent.DefaultInferAddr),
		InferSocket:           orDefault(fc.InferSocket, filepath.Join(fc.DataDir, agent.InferSocketName)),
		SideloadDir:           orDefault(fc.SideloadDir, filepath.Join(fc.DataDir, "sideload")),
		SideloadWaiveDirector: fc.SideloadWaiveDirector,
	}
	models.Infer.MaxBodyBytes, models.Infer.Concurrency, models.Infer.MaxQueue = fc.InferMaxBodyBytes, fc.InferConcurrency, fc.InferMaxQueue
	models.Infer.QueueTimeout = fc.InferQueueTimeout
	models.Infer.SharedMemory.MaxRegions, models.Infer.SharedMemory.MaxBytes = fc.InferShmMaxRegions, fc.InferShmMaxBytes
	if models.PluginDir == "" {
		models.PluginDir = DefaultPluginDir
		if exeDir != "" {
			if paths, _ := filepath.Glob(filepath.Join(exeDir, native.BinaryPrefix+"*")); len(paths) > 0 {
				models.PluginDir = exeDir
			}
		}
	}
	return agent.Config{
		Models:            models,
		DataDir:           fc.DataDir,
		DeviceID:          fc.DeviceID,
		ServerURL:         fc.Server,
		EnrolToken:        fc.EnrolToken,
		CAFile:            fc.CAFile,
		CAFingerprint:     fc.CAFingerprint,
		MQTTURL:           fc.MQTTURL,
		TopicPrefix:       fc.TopicPrefix,
		Labels:            fc.Labels,
		HeartbeatInterval: fc.HeartbeatInterval,
		ChunkQuotaBytes:   fc.ChunkQuotaBytes,
		Telemetry: agent.TelemetryConfig{Window: fc.MetricsWindow, QuotaBytes: fc.MetricsQuotaBytes,
			BudgetBytesPerDay: fc.TelemetryBudgetBytesPerDay},
	}, nil
}

// Bounds on the telemetry keys (0 takes agent/metrics' default: a 60 s
// window, a 64 MiB quota).
const (
	MinMetricsWindow = time.Second
	MaxMetricsWindow = 24 * time.Hour
	MinMetricsQuota  = 1 << 20
)

// Bounds on the inference API's keys (0 takes agent/inferapi's default:
// 64 MiB bodies, GOMAXPROCS calls per model, 64 queued, 2 s in the queue,
// 16 shared memory regions of 1 GiB in all).
const (
	MinInferBody  int64 = 1 << 10
	MaxInferBody  int64 = 2 << 30
	MaxInferCalls       = 1024
	MaxInferQueue       = 1 << 16
	MaxInferWait        = 10 * time.Minute
	MaxShmRegions       = 1024
	MaxShmBytes   int64 = 64 << 30
	MinShmBytes   int64 = 4 << 10
)

// checkInfer refuses inference API limits out of range, naming the key.
func (fc FileConfig) checkInfer() error {
	switch {
	case fc.InferMaxBodyBytes != 0 && (fc.InferMaxBodyBytes < MinInferBody || fc.InferMaxBodyBytes > MaxInferBody):
		return fmt.Errorf("config: infer_max_body_bytes %d is outside %d..%d", fc.InferMaxBodyBytes, MinInferBody, MaxInferBody)
	case fc.InferConcurrency < 0 || fc.InferConcurrency > MaxInferCalls:
		return fmt.Errorf("config: infer_concurrency %d is outside 0..%d", fc.InferConcurrency, MaxInferCalls)
	case fc.InferMaxQueue < 0 || fc.InferMaxQueue > MaxInferQueue:
		return fmt.Errorf("config: infer_max_queue %d is outside 0..%d", fc.InferMaxQueue, MaxInferQueue)
	case fc.InferQueueTimeout < 0 || fc.InferQueueTimeout > MaxInferWait:
		return fmt.Errorf("config: infer_queue_timeout %s is outside 0..%s", fc.InferQueueTimeout, MaxInferWait)
	case fc.InferShmMaxRegions < 0 || fc.InferShmMaxRegions > MaxShmRegions:
		return fmt.Errorf("config: infer_shm_max_regions %d is outside 0..%d", fc.InferShmMaxRegions, MaxShmRegions)
	case fc.InferShmMaxBytes != 0 && (fc.InferShmMaxBytes < MinShmBytes || fc.InferShmMaxBytes > MaxShmBytes):
		return fmt.Errorf("config: infer_shm_max_bytes %d is outside %d..%d", fc.InferShmMaxBytes, MinShmBytes, MaxShmBytes)
	}
	return nil
}

// MinChunkQuota is the least chunk_quota_bytes (0 takes agent/chunkstore's
// 1 GiB default): a bundle larger than the quota can never be fetched.
const MinChunkQuota = 1 << 20

// String renders the configuration with the enrol token redacted, for logs.
func (fc FileConfig) String() string {
	tok := ""
	if fc.EnrolToken != "" {
		tok = "[redacted]"
	}
	return fmt.Sprintf("data_dir=%s device_id=%s server=%s enrol_token=%s ca_file=%s ca_fingerprint=%s mqtt_url=%s topic_prefix=%s heartbeat_interval=%s labels=%v"+
		" plugin_dir=%s ort_lib=%s infer_addr=%s infer_socket=%s sideload_dir=%s sideload_waive_director=%t chunk_quota_bytes=%d"+
		" metrics_window=%s metrics_quota_bytes=%d telemetry_budget_bytes_per_day=%d"+
		" infer_max_body_bytes=%d infer_concurrency=%d infer_max_queue=%d infer_queue_timeout=%s infer_shm_max_regions=%d infer_shm_max_bytes=%d",
		fc.DataDir, fc.DeviceID, fc.Server, tok, fc.CAFile, fc.CAFingerprint, fc.MQTTURL, fc.TopicPrefix, fc.HeartbeatInterval, fc.Labels,
		fc.PluginDir, fc.ORTLib, fc.InferAddr, fc.InferSocket, fc.SideloadDir, fc.SideloadWaiveDirector, fc.ChunkQuotaBytes,
		fc.MetricsWindow, fc.MetricsQuotaBytes, fc.TelemetryBudgetBytesPerDay,
		fc.InferMaxBodyBytes, fc.InferConcurrency, fc.InferMaxQueue, fc.InferQueueTimeout, fc.InferShmMaxRegions, fc.InferShmMaxBytes)
}
