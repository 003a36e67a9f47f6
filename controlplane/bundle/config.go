package bundle

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"google.golang.org/protobuf/encoding/protojson"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// ConfigNames are the names Build looks for the bundle's metadata under,
// in the bundle folder; exactly one must exist. The format, all paths
// relative to the folder:
//
//	name = "digits"              # the model's name (a-z, 0-9, -, _, .)
//	release = 3                  # monotonic per name
//	version = "1.2.0"            # display only
//	kind = "model"               # or "agent"
//	exclude = ["golden/*"]       # globs (path.Match) of files left out; the config itself always is
//	[annotations]                # free text, e.g. commit = "abc123"
//
//	[[variants]]                 # best first
//	runtime = "onnx"
//	accelerators = ["cuda"]
//	entry = "model.onnx"
//	platforms = ["linux/arm64"]  # optional
//	options = { threads = "2" }
//
//	[[inputs]]                   # and [[outputs]]: the tensor schema
//	name = "pixels"
//	dtype = "float32"            # float32 float64 float16 bfloat16 int8..int64 uint8..uint64 bool string
//	shape = [-1, 64]             # -1 = dynamic
//
//	[golden]
//	abs_tolerance = 1e-4
//	rel_tolerance = 0.0
//	[[golden.inputs]]            # and [[golden.expected]]
//	name = "pixels"
//	dtype = "float32"
//	shape = [4, 64]
//	file = "golden/pixels.json"  # .json: an array of numbers (nesting allowed, row-major);
//	                             # .bin: raw little-endian elements; or inline values = [...]
//
//	[probation]
//	duration = "10m"
//	max_error_rate = 0.01
//	max_p95_latency_ratio = 1.5
//	shadow = true
//	max_disagreement_rate = 0.05
//	min_requests = 100
//	max_crashes = 0
//
//	[monitor]
//	file = "monitor.wasm"
//	export = "features"
//	sample_every = 10            # 1 inference in 10 (optional)
//
//	[drift]
//	file = "drift.json"          # the protobuf JSON of a flotilla.v1.DriftBaseline, or inline:
//	thresholds = { js = 0.1, psi = 0.2, ks = 0.1 }   # (overrides the file's)
//	[[drift.features]]
//	name = "p0"
//	tensor = "pixels"
//	index = 0
//	bin_edges = [0.25, 0.5, 0.75]
//	counts = [10, 4, 3, 1]       # underflow, the bins, overflow
//	[drift.prediction]
//	name = "class"
//	categories = ["0", "1"]
//	counts = [5, 5, 0]           # one per category, then "other"
var ConfigNames = []string{"bundle.toml", "flotilla-bundle.toml"}

const maxConfigSize = 16 << 20

type config struct {
	Name        string            `toml:"name"`
	Release     uint64            `toml:"release"`
	Version     string            `toml:"version"`
	Kind        string            `toml:"kind"`
	Exclude     []string          `toml:"exclude"`
	Annotations map[string]string `toml:"annotations"`
	Variants    []struct {
		Runtime      string            `toml:"runtime"`
		Accelerators []string          `toml:"accelerators"`
		Entry        string            `toml:"entry"`
		Platforms    []string          `toml:"platforms"`
		Options      map[string]string `toml:"options"`
	} `toml:"variants"`
	Inputs  []tensorInfo `toml:"inputs"`
	Outputs []tensorInfo `toml:"outputs"`
	Golden  *struct {
		AbsTolerance float64        `toml:"abs_tolerance"`
		RelTolerance float64        `toml:"rel_tolerance"`
		Inputs       []tensorConfig `toml:"inputs"`
		Expected     []tensorConfig `toml:"expected"`
	} `toml:"golden"`
	Probation *struct {
		Duration            string  `toml:"duration"`
		MaxErrorRate        float64 `toml:"max_error_rate"`
		MaxP95LatencyRatio  float64 `toml:"max_p95_latency_ratio"`
		Shadow              bool    `toml:"shadow"`
		MaxDisagreementRate float64 `toml:"max_disagreement_rate"`
		MinRequests         uint32  `toml:"min_requests"`
		MaxCrashes          uint32  `toml:"max_crashes"`
	} `toml:"probation"`
	Monitor *struct {
		File        string `toml:"file"`
		Export      string `toml:"export"`
		SampleEvery uint32 `toml:"sample_every"`
	} `toml:"monitor"`
	Drift *struct {
		File       string          `toml:"file"`
		Thresholds *thresholds     `toml:"thresholds"`
		Features   []featureConfig `toml:"features"`
		Prediction *featureConfig  `toml:"prediction"`
	} `toml:"drift"`
}

type tensorInfo struct {
	Name  string  `toml:"name"`
	DType string  `toml:"dtype"`
	Shape []int64 `toml:"shape"`
}

type thresholds struct {
	JS  float64 `toml:"js"`
	PSI float64 `toml:"psi"`
	KS  float64 `toml:"ks"`
}

type featureConfig struct {
	Name       string    `toml:"name"`
	Tensor     string    `toml:"tensor"`
	Index      uint32    `toml:"index"`
	BinEdges   []float64 `toml:"bin_edges"`
	Categories []string  `toml:"categories"`
	Counts     []uint64  `toml:"counts"`
}

func (f featureConfig) proto() *pb.FeatureBaseline {
	return &pb.FeatureBaseline{Name: f.Name, Tensor: f.Tensor, Index: f.Index,
		BinEdges: f.BinEdges, Categories: f.Categories, Counts: f.Counts}
}

// loadConfig reads the one config file in root, refusing unknown keys so a
// typo is an error rather than a silently missing setting.
func loadConfig(root *os.Root) (*config, string, error) {
	var name string
	for _, n := range ConfigNames {
		if _, err := root.Lstat(n); err == nil {
			if name != "" {
				return nil, "", fmt.Errorf("both %s and %s: keep one", name, n)
			}
			name = n
		}
	}
	if name == "" {
		return nil, "", fmt.Errorf("no %s", strings.Join(ConfigNames, " or "))
	}
	b, err := readSmall(root, name, maxConfigSize)
	if err != nil {
		return nil, "", err
	}
	var c config
	md, err := toml.Decode(string(b), &c)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, "", fmt.Errorf("%s: unknown key %q", name, und[0].String())
	}
	for _, g := range c.Exclude {
		if _, err := path.Match(g, ""); err != nil {
			return nil, "", fmt.Errorf("%s: exclude %q: %w", name, g, err)
		}
	}
	return &c, name, nil
}

// readSmall reads a regular file of root, refusing one over limit bytes.
func readSmall(root *os.Root, name string, limit int64) ([]byte, error) {
	st, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrRefused, name)
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", name, limit)
	}
	return b, nil
}

// excluded reports whether p or one of its parent folders matches an
// exclude glob.
func (c *config) excluded(p string) bool {
	for q := p; q != "." && q != "/" && q != ""; q = path.Dir(q) {
		for _, g := range c.Exclude {
			if ok, _ := path.Match(g, q); ok {
				return true
			}
		}
	}
	return false
}

var kinds = map[string]pb.BundleKind{"model": pb.BundleKind_BUNDLE_KIND_MODEL, "agent": pb.BundleKind_BUNDLE_KIND_AGENT}

// manifest makes the manifest's metadata, reading the reference files
// (golden tensors, drift baseline) the config names; Files is left empty.
func (c *config) manifest(root *os.Root) (*pb.BundleManifest, error) {
	kind, ok := kinds[c.Kind]
	if !ok {
		return nil, fmt.Errorf("kind %q: want model or agent", c.Kind)
	}
	m := &pb.BundleManifest{SchemaVersion: pb.ManifestSchemaVersion, Name: c.Name, Release: c.Release,
		Version: c.Version, Kind: kind, Annotations: c.Annotations}
	for _, v := range c.Variants {
		m.Variants = append(m.Variants, &pb.RuntimeVariant{Runtime: v.Runtime, Accelerators: v.Accelerators,
			Entry: v.Entry, Platforms: v.Platforms, Options: v.Options})
	}
	var err error
	if m.Inputs, err = tensorInfos(c.Inputs); err != nil {
		return nil, fmt.Errorf("inputs: %w", err)
	}
	if m.Outputs, err = tensorInfos(c.Outputs); err != nil {
		return nil, fmt.Errorf("outputs: %w", err)
	}
	if g := c.Golden; g != nil {
		m.Golden = &pb.GoldenCheck{AbsTolerance: g.AbsTolerance, RelTolerance: g.RelTolerance}
		if m.Golden.Inputs, err = loadTensors(root, g.Inputs); err != nil {
			return nil, fmt.Errorf("golden.inputs: %w", err)
		}
		if m.Golden.Expected, err = loadTensors(root, g.Expected); err != nil {
			return nil, fmt.Errorf("golden.expected: %w", err)
		}
	}
	if p := c.Probation; p != nil {
		var d time.Duration
		if p.Duration != "" {
			if d, err = time.ParseDuration(p.Duration); err != nil || d < 0 {
				return nil, fmt.Errorf("probation.duration %q: not a duration", p.Duration)
			}
		}
		m.Probation = &pb.ProbationPolicy{DurationS: uint32(d / time.Second), MaxErrorRate: p.MaxErrorRate,
			MaxP95LatencyRatio: p.MaxP95LatencyRatio, Shadow: p.Shadow, MaxDisagreementRate: p.MaxDisagreementRate,
			MinRequests: p.MinRequests, MaxCrashes: p.MaxCrashes}
	}
	if mon := c.Monitor; mon != nil {
		m.Monitor = &pb.MonitorFunction{File: mon.File, Export: mon.Export, SampleEvery: mon.SampleEvery}
	}
	if c.Drift != nil {
		if m.Drift, err = c.drift(root); err != nil {
			return nil, fmt.Errorf("drift: %w", err)
		}
	}
	return m, nil
}

func (c *config) drift(root *os.Root) (*pb.DriftBaseline, error) {
	d := c.Drift
	out := new(pb.DriftBaseline)
	if d.File != "" {
		if len(d.Features) > 0 || d.Prediction != nil {
			return nil, errors.New("file or inline features and prediction, not both")
		}
		b, err := readSmall(root, d.File, maxConfigSize)
		if err != nil {
			return nil, err
		}
		if err := protojson.Unmarshal(b, out); err != nil {
			return nil, fmt.Errorf("%s: %w", d.File, err)
		}
	}
	for _, f := range d.Features {
		out.Features = append(out.Features, f.proto())
	}
	if d.Prediction != nil {
		out.Prediction = d.Prediction.proto()
	}
	if t := d.Thresholds; t != nil {
		out.Thresholds = &pb.DriftThresholds{Js: t.JS, Psi: t.PSI, Ks: t.KS}
	}
	return out, nil
}

func tensorInfos(ts []tensorInfo) ([]*pb.TensorInfo, error) {
	var out []*pb.TensorInfo
	for _, t := range ts {
		dt, err := parseDType(t.DType)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
		out = append(out, &pb.TensorInfo{Name: t.Name, Dtype: dt, Shape: t.Shape})
	}
	return out, nil
}
