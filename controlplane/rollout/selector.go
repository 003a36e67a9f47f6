package rollout

import (
	"fmt"
	"slices"
	"strings"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Matches reports whether a device with these labels and facts is selected.
// A selector with fact lists does not select a device whose facts are
// unknown.
func (sel *Selector) Matches(labels map[string]string, f *pb.Facts) bool {
	for k, v := range sel.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	if len(sel.Arch) > 0 && !slices.Contains(sel.Arch, f.GetArch()) {
		return false
	}
	for _, a := range sel.Accelerators {
		if !slices.Contains(accelerators(f), a) {
			return false
		}
	}
	for _, r := range sel.Runtimes {
		if !slices.Contains(runtimes(f), r) {
			return false
		}
	}
	return true
}

func accelerators(f *pb.Facts) []string {
	var out []string
	for _, a := range f.GetAccelerators() {
		out = append(out, a.GetKind())
	}
	return out
}

func runtimes(f *pb.Facts) []string {
	var out []string
	for _, r := range f.GetRuntimes() {
		out = append(out, r.GetName())
	}
	return out
}

// Preflight says why a device with facts f can run no variant of the
// bundle m, or "" when one fits. It follows the agent's own choice
// (agent/lifecycle): the runtime present, the platform listed (when the
// variant lists any), every accelerator present.
func Preflight(m *pb.BundleManifest, f *pb.Facts) string {
	if f == nil {
		return "no facts reported yet (the device has not sent its birth)"
	}
	if len(m.GetVariants()) == 0 {
		return "the bundle has no runtime variant"
	}
	var why []string
	for i, v := range m.GetVariants() {
		reason := unfit(v, f)
		if reason == "" {
			return ""
		}
		why = append(why, fmt.Sprintf("variant %d (%s): %s", i, v.GetRuntime(), reason))
	}
	return strings.Join(why, "; ")
}

// unfit says why variant v cannot run on a device with facts f.
func unfit(v *pb.RuntimeVariant, f *pb.Facts) string {
	hasRuntime := false
	for _, r := range f.GetRuntimes() {
		hasRuntime = hasRuntime || r.GetName() == v.GetRuntime()
	}
	if !hasRuntime {
		return "runtime " + v.GetRuntime() + " unavailable"
	}
	if ps := v.GetPlatforms(); len(ps) > 0 {
		base, _, _ := strings.Cut(f.GetArch(), "/")
		if !slices.Contains(ps, f.GetOs()+"/"+f.GetArch()) && !slices.Contains(ps, f.GetOs()+"/"+base) {
			return "not built for " + f.GetOs() + "/" + f.GetArch()
		}
	}
	for _, a := range v.GetAccelerators() {
		has := false
		for _, x := range f.GetAccelerators() {
			has = has || x.GetKind() == a
		}
		if !has {
			return "accelerator " + a + " absent"
		}
	}
	return ""
}
