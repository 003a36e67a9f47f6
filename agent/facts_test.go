package agent

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// TestFactsListRuntimes: an agent that runs models lists wasm and each
// plugin binary's runtime in its facts, named by file (no plugin is
// started: these binaries would fail if run), without changing the facts
// its hook returns; one that runs no model lists none.
func TestFactsListRuntimes(t *testing.T) {
	dir := t.TempDir()
	for name, mode := range map[string]os.FileMode{
		"flotilla-runtime-onnx":   0o755,
		"flotilla-runtime-tflite": 0o755,
		"flotilla-runtime-off":    0o644, // not executable: not a runtime
		"README":                  0o755,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/sh\nexit 3\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	host := &flotillapb.Facts{Os: "linux", Arch: "amd64", Runtimes: []*flotillapb.RuntimeInfo{{Name: "onnx", Version: "1.30.0"}}}
	a := &Agent{cfg: Config{Facts: func() *flotillapb.Facts { return host }, Models: &ModelsConfig{PluginDir: dir}}}
	f := a.facts()
	var names []string
	for _, r := range f.GetRuntimes() {
		names = append(names, r.GetName())
	}
	if want := []string{"onnx", "tflite", "wasm"}; !slices.Equal(sortedCopy(names), want) {
		t.Errorf("runtimes %v, want %v", names, want)
	}
	if f.GetRuntimes()[0].GetVersion() != "1.30.0" || f.GetOs() != "linux" {
		t.Errorf("the hook's facts were not kept: %v", f)
	}
	if len(host.Runtimes) != 1 {
		t.Errorf("the hook's facts were changed: %v", host)
	}

	a.cfg.Models.PluginDir = ""
	if got := a.facts().GetRuntimes(); len(got) != 2 || got[1].GetName() != "wasm" {
		t.Errorf("no plugin folder: runtimes %v, want onnx (the hook's) and wasm", got)
	}
	a.cfg.Models = nil
	if got := a.facts(); got != host {
		t.Errorf("an agent without models reports its hook's facts unchanged, got %v", got)
	}
}

func sortedCopy(s []string) []string {
	c := slices.Clone(s)
	slices.Sort(c)
	return c
}
