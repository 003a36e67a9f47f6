package config

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Change is one setting that differs between two configurations.
type Change struct {
	Key      string
	Old, New string // as logged (the enrol token redacted)
	Live     bool   // applied without a restart
}

// liveKeys are the settings a running agent takes without a restart.
var liveKeys = map[string]bool{"heartbeat_interval": true, "labels": true, "log_level": true}

// settings renders every setting of fc by its file key.
func (fc FileConfig) settings() map[string]string {
	labels := make([]string, 0, len(fc.Labels))
	for _, k := range slices.Sorted(maps.Keys(fc.Labels)) {
		labels = append(labels, k+"="+fc.Labels[k])
	}
	tok := ""
	if fc.EnrolToken != "" {
		tok = "[redacted:" + fmt.Sprint(len(fc.EnrolToken)) + "]"
	}
	return map[string]string{
		"data_dir": fc.DataDir, "device_id": fc.DeviceID, "server": fc.Server, "enrol_token": tok,
		"ca_file": fc.CAFile, "ca_fingerprint": fc.CAFingerprint, "mqtt_url": fc.MQTTURL, "topic_prefix": fc.TopicPrefix,
		"heartbeat_interval": fc.HeartbeatInterval.String(), "log_level": fc.LogLevel, "labels": strings.Join(labels, ","),
		"plugin_dir": fc.PluginDir, "ort_lib": fc.ORTLib, "infer_addr": fc.InferAddr, "infer_socket": fc.InferSocket,
		"sideload_dir": fc.SideloadDir, "sideload_waive_director": fmt.Sprint(fc.SideloadWaiveDirector),
		"chunk_quota_bytes": fmt.Sprint(fc.ChunkQuotaBytes), "metrics_window": fc.MetricsWindow.String(),
		"metrics_quota_bytes": fmt.Sprint(fc.MetricsQuotaBytes), "telemetry_budget_bytes_per_day": fmt.Sprint(fc.TelemetryBudgetBytesPerDay),
		"infer_max_body_bytes": fmt.Sprint(fc.InferMaxBodyBytes), "infer_concurrency": fmt.Sprint(fc.InferConcurrency),
		"infer_max_queue": fmt.Sprint(fc.InferMaxQueue), "infer_queue_timeout": fc.InferQueueTimeout.String(),
		"infer_shm_max_regions": fmt.Sprint(fc.InferShmMaxRegions), "infer_shm_max_bytes": fmt.Sprint(fc.InferShmMaxBytes),
	}
}

// Diff lists the settings that differ from old to new, sorted by key. A
// changed enrol token shows as a change of its redacted form (its
// length), never its value; a token of the same length that changed is
// reported too.
func Diff(old, new FileConfig) []Change {
	a, b := old.settings(), new.settings()
	if old.EnrolToken != new.EnrolToken && a["enrol_token"] == b["enrol_token"] {
		b["enrol_token"] += " (changed)"
	}
	var out []Change
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if a[k] != b[k] {
			out = append(out, Change{Key: k, Old: a[k], New: b[k], Live: liveKeys[k]})
		}
	}
	return out
}

// Watch follows the configuration file at path until ctx is done: when it
// is written, created or replaced (editors save by rename, so the folder
// is watched), load reads the configuration again (the file, then the
// environment and flags over it, as at start) and every change is logged
// — "applied" for the live settings, "needs a restart" for the rest —
// and apply gets the new configuration with the changes. A file that
// does not load is logged and the configuration in force stays. Watch
// returns an error only when the folder cannot be watched.
func Watch(ctx context.Context, path string, cur FileConfig, load func() (FileConfig, error), log *slog.Logger, apply func(FileConfig, []Change)) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("config: watch: %w", err)
	}
	defer w.Close()
	if err := w.Add(filepath.Dir(abs)); err != nil {
		return fmt.Errorf("config: watch %s: %w", filepath.Dir(abs), err)
	}
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Clean(ev.Name) == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				settle.Reset(100 * time.Millisecond) // a save is often several events
			}
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			log.Warn("config watch", "err", err)
			settle.Reset(100 * time.Millisecond)
		case <-settle.C:
			next, err := load()
			if err != nil {
				log.Error("config file changed but does not load; keeping the configuration in force", "path", abs, "err", err)
				continue
			}
			changes := Diff(cur, next)
			if len(changes) == 0 {
				continue
			}
			for _, c := range changes {
				if c.Live {
					log.Info("config change applied", "key", c.Key, "old", c.Old, "new", c.New)
				} else {
					log.Warn("config change needs a restart", "key", c.Key, "old", c.Old, "new", c.New)
				}
			}
			cur = next
			apply(next, changes)
		}
	}
}
