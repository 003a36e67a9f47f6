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
//	[labels]
//	site = "plant-3"
package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/flotilla-edge/flotilla/agent"
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
}

// LoadConfig reads the TOML file at path ("" for none), then overrides it
// with the environment read through env (nil for none):
//
//	FLOTILLA_DATA_DIR, FLOTILLA_DEVICE_ID, FLOTILLA_SERVER, FLOTILLA_ENROL_TOKEN,
//	FLOTILLA_CA_FILE, FLOTILLA_CA_FINGERPRINT, FLOTILLA_MQTT_URL,
//	FLOTILLA_TOPIC_PREFIX, FLOTILLA_HEARTBEAT_INTERVAL (a Go duration),
//	FLOTILLA_LOG_LEVEL, FLOTILLA_LABELS ("k=v,k2=v2", added to the file's)
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

// Agent returns the agent configuration; the caller adds what is not
// configured in a file (logger, clock, version).
func (fc FileConfig) Agent() (agent.Config, error) {
	if fc.HeartbeatInterval < 0 {
		return agent.Config{}, errors.New("config: heartbeat_interval is negative")
	}
	return agent.Config{
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
	}, nil
}

// String renders the configuration with the enrol token redacted, for logs.
func (fc FileConfig) String() string {
	tok := ""
	if fc.EnrolToken != "" {
		tok = "[redacted]"
	}
	return fmt.Sprintf("data_dir=%s device_id=%s server=%s enrol_token=%s ca_file=%s ca_fingerprint=%s mqtt_url=%s topic_prefix=%s heartbeat_interval=%s labels=%v",
		fc.DataDir, fc.DeviceID, fc.Server, tok, fc.CAFile, fc.CAFingerprint, fc.MQTTURL, fc.TopicPrefix, fc.HeartbeatInterval, fc.Labels)
}
