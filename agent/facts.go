package agent

import (
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime/native"
)

// facts is what the agent tells of its device in its birth and its
// enrolment: the host facts (Config.Facts) plus, when it runs models, the
// runtimes it can load them into, so the control plane's preflight sends
// it only bundles it can run. The hook's facts are copied, never changed
// (the simulator shares one among many agents).
func (a *Agent) facts() *flotillapb.Facts {
	f := a.cfg.Facts()
	if a.cfg.Models == nil {
		return f
	}
	if f == nil {
		f = &flotillapb.Facts{}
	} else {
		f = proto.Clone(f).(*flotillapb.Facts)
	}
	for _, name := range runtimeNames(a.cfg.Models.PluginDir) {
		if !slices.ContainsFunc(f.Runtimes, func(r *flotillapb.RuntimeInfo) bool { return r.GetName() == name }) {
			f.Runtimes = append(f.Runtimes, &flotillapb.RuntimeInfo{Name: name})
		}
	}
	return f
}

// runtimeNames lists the runtimes a model may ask for, sorted: wasm
// (wazero is built in) and one per plugin binary in dir, named by its file
// (flotilla-runtime-onnx → "onnx"). No plugin is started to ask it: a
// plugin that fails to start later is refused at activation, and its
// file name is what Lookup goes by anyway. Versions and execution
// providers are left out for the same reason.
func runtimeNames(dir string) []string {
	out := []string{"wasm"}
	if dir != "" {
		paths, _ := native.Discover(dir)
		for _, p := range paths {
			if name := strings.TrimPrefix(filepath.Base(p), native.BinaryPrefix); name != "" && name != "wasm" {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}
