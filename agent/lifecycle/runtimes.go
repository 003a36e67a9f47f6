package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime"
)

// Runtimes finds the runtime a bundle variant names ("onnx", "wasm").
type Runtimes interface {
	Lookup(name string) (runtime.Runtime, bool)
}

// RuntimeList is Runtimes over a list, matched by each runtime's Name: the
// plugins of a native.Host (Host.Plugins) and a wasm.Runtime, say.
type RuntimeList []runtime.Runtime

// Lookup returns the first runtime called name.
func (l RuntimeList) Lookup(name string) (runtime.Runtime, bool) {
	for _, r := range l {
		if r.Name() == name {
			return r, true
		}
	}
	return nil, false
}

// crasher is a runtime that counts its process's crashes (native.Plugin).
type crasher interface{ Crashes() int }

// fits says why variant v cannot run on this device, or "" if it can.
func (l *Lifecycle) fits(v *pb.RuntimeVariant) (runtime.Runtime, string) {
	rt, ok := l.cfg.Runtimes.Lookup(v.GetRuntime())
	if !ok {
		return nil, fmt.Sprintf("runtime %s unavailable", v.GetRuntime())
	}
	if ps := v.GetPlatforms(); len(ps) > 0 && !slices.Contains(ps, l.cfg.Platform) {
		return nil, fmt.Sprintf("not built for %s", l.cfg.Platform)
	}
	for _, a := range v.GetAccelerators() {
		if !slices.Contains(l.cfg.Accelerators, a) {
			return nil, fmt.Sprintf("accelerator %s absent", a)
		}
	}
	return rt, ""
}

// loadBest loads the first variant that fits this device and loads; the
// error names why each variant was passed over.
func (l *Lifecycle) loadBest(ctx context.Context, dir string, m *pb.BundleManifest) (runtime.Model, runtime.Runtime, int, error) {
	var why []string
	var loadErr error
	missing := false // a variant's only want is a runtime not installed
	for i, v := range m.GetVariants() {
		rt, reason := l.fits(v)
		if rt == nil && strings.HasPrefix(reason, "runtime ") && l.fitsWith(v) {
			missing = true
		}
		if reason == "" {
			mod, err := rt.Load(ctx, runtime.LoadSpec{Dir: dir, Entry: v.GetEntry(), Providers: v.GetAccelerators(), Options: v.GetOptions()})
			if err == nil {
				return mod, rt, i, nil
			}
			loadErr = errors.Join(loadErr, err)
			reason = "load: " + err.Error()
		}
		why = append(why, fmt.Sprintf("variant %d (%s%s): %s", i, v.GetRuntime(), accelSuffix(v), reason))
	}
	if loadErr != nil {
		return nil, nil, -1, fmt.Errorf("%s: %w", strings.Join(why, "; "), loadErr)
	}
	if missing {
		return nil, nil, -1, fmt.Errorf("%w: %w: %s", ErrNoVariant, ErrRuntimeMissing, strings.Join(why, "; "))
	}
	return nil, nil, -1, fmt.Errorf("%w: %s", ErrNoVariant, strings.Join(why, "; "))
}

// fitsWith says whether v would fit this device were its runtime
// installed: its platform and accelerators are the device's.
func (l *Lifecycle) fitsWith(v *pb.RuntimeVariant) bool {
	if ps := v.GetPlatforms(); len(ps) > 0 && !slices.Contains(ps, l.cfg.Platform) {
		return false
	}
	for _, a := range v.GetAccelerators() {
		if !slices.Contains(l.cfg.Accelerators, a) {
			return false
		}
	}
	return true
}

func accelSuffix(v *pb.RuntimeVariant) string {
	if len(v.GetAccelerators()) == 0 {
		return ""
	}
	return " on " + strings.Join(v.GetAccelerators(), "+")
}
