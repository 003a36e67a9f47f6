package config

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a log sink safe for the watcher's goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type applied struct {
	fc      FileConfig
	changes []Change
}

// TestWatchAppliesLiveChanges edits a real config file in a temp folder:
// in place, with a syntax error, and by an editor's rename; each change
// is applied once and logged, live or needing a restart.
func TestWatchAppliesLiveChanges(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.toml")
	if err := os.WriteFile(path, []byte("data_dir = \"/d\"\nheartbeat_interval = \"30s\"\n[labels]\nsite = \"a\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	load := func() (FileConfig, error) { return LoadConfig(path, nil) }
	cur, err := load()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	got := make(chan applied, 4)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Watch(ctx, path, cur, load, log, func(fc FileConfig, ch []Change) { got <- applied{fc, ch} })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	next := func(what string) applied {
		t.Helper()
		select {
		case a := <-got:
			return a
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no change applied", what)
		}
		return applied{}
	}
	time.Sleep(100 * time.Millisecond) // let the watch start

	// In place: two live settings and one that needs a restart.
	if err := os.WriteFile(path, []byte("data_dir = \"/e\"\nheartbeat_interval = \"5s\"\nlog_level = \"debug\"\n[labels]\nsite = \"b\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := next("in-place edit")
	if a.fc.HeartbeatInterval != 5*time.Second || a.fc.Labels["site"] != "b" || a.fc.LogLevel != "debug" {
		t.Fatalf("applied %+v", a.fc)
	}
	keys := map[string]bool{}
	for _, c := range a.changes {
		keys[c.Key] = c.Live
	}
	if len(keys) != 4 || !keys["heartbeat_interval"] || !keys["labels"] || !keys["log_level"] || keys["data_dir"] {
		t.Fatalf("changes %+v", a.changes)
	}
	out := logs.String()
	for _, want := range []string{`msg="config change applied" key=heartbeat_interval old=30s new=5s`, `key=labels old="site=a" new="site=b"`,
		`msg="config change needs a restart" key=data_dir old=/d new=/e`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}

	// A broken file changes nothing and says so.
	if err := os.WriteFile(path, []byte("heartbeat_interval = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "does not load") {
		if time.Now().After(deadline) {
			t.Fatalf("no log of the broken file:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case a := <-got:
		t.Fatalf("a broken file was applied: %+v", a)
	default:
	}

	// An editor's save: write a temporary file, rename it over.
	tmp := filepath.Join(dir, ".agent.toml.swp")
	if err := os.WriteFile(tmp, []byte("data_dir = \"/e\"\nheartbeat_interval = \"7s\"\nlog_level = \"debug\"\n[labels]\nsite = \"b\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	a = next("rename")
	if len(a.changes) != 1 || a.changes[0].Key != "heartbeat_interval" || a.changes[0].New != "7s" {
		t.Fatalf("changes after the rename %+v", a.changes)
	}
}

func TestDiffRedactsTheToken(t *testing.T) {
	ch := Diff(FileConfig{EnrolToken: "secret-one"}, FileConfig{EnrolToken: "secret-two"})
	if len(ch) != 1 || ch[0].Key != "enrol_token" || ch[0].Live {
		t.Fatalf("changes %+v", ch)
	}
	if s := ch[0].Old + ch[0].New; strings.Contains(s, "secret") {
		t.Fatalf("token shown: %+v", ch[0])
	}
	if len(Diff(FileConfig{Labels: map[string]string{"a": "1"}}, FileConfig{Labels: map[string]string{"a": "1"}})) != 0 {
		t.Fatal("equal configurations differ")
	}
}

func TestModelsSettings(t *testing.T) {
	fc, err := LoadConfig(write(t, "data_dir = \"/var/x\"\ninfer_addr = \"off\"\nsideload_waive_director = true\n"),
		func(k string) string {
			return map[string]string{"FLOTILLA_ORT_LIB": "/opt/ort.so", "FLOTILLA_SIDELOAD_DIR": "/media/usb"}[k]
		})
	if err != nil {
		t.Fatal(err)
	}
	exeDir := t.TempDir()
	ac, err := fc.Agent(exeDir)
	if err != nil {
		t.Fatal(err)
	}
	m := ac.Models
	if m == nil || m.InferAddr != "" || m.InferSocket != "/var/x/infer.sock" || m.SideloadDir != "/media/usb" ||
		!m.SideloadWaiveDirector || m.ORTLib != "/opt/ort.so" || m.PluginDir != DefaultPluginDir {
		t.Fatalf("models %+v", m)
	}
	// A plugin next to the binary makes its folder the plugin folder.
	if err := os.WriteFile(filepath.Join(exeDir, "flotilla-runtime-onnx"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if ac, _ = fc.Agent(exeDir); ac.Models.PluginDir != exeDir {
		t.Fatalf("plugin dir %q", ac.Models.PluginDir)
	}
	if _, err := LoadConfig("", func(k string) string {
		return map[string]string{"FLOTILLA_SIDELOAD_WAIVE_DIRECTOR": "perhaps"}[k]
	}); err == nil {
		t.Fatal("a bad boolean accepted")
	}
}
