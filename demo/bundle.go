package demo

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// bundleTOML is the digits bundle's config: the shared model, a golden
// check of four test rows against the probabilities the model is known to
// give, and a probation short enough to watch.
var bundleTOML = template.Must(template.New("bundle.toml").Parse(`# The digits demo model: a 64→64→32→10 MLP on 8×8 handwritten digits
# (written by the demo from {{.ModelDir}}).
name = "digits"
release = 1
version = "1.0.0"
kind = "model"
exclude = ["golden"]

[annotations]
source = "UCI optical handwritten digits, scikit-learn split"

[[variants]]
runtime = "onnx"
entry = "model.onnx"

[[inputs]]
name = "pixels"
dtype = "float32"
shape = [-1, 64]

[[outputs]]
name = "probabilities"
dtype = "float32"
shape = [-1, 10]

[golden]
abs_tolerance = 1e-4
rel_tolerance = 0.0

[[golden.inputs]]
name = "pixels"
dtype = "float32"
shape = [4, 64]
file = "golden/pixels.json"

[[golden.expected]]
name = "probabilities"
dtype = "float32"
shape = [4, 10]
file = "golden/probabilities.json"

[probation]
duration = "{{.Probation}}"
max_error_rate = 0.01
min_requests = {{.MinRequests}}
`))

// writeBundleSource writes the bundle's source folder into dir: its
// config, the model and the golden files.
func writeBundleSource(dir string, cfg Config, ds *dataset) (string, error) {
	if err := os.MkdirAll(filepath.Join(dir, "golden"), 0o755); err != nil {
		return "", err
	}
	model, err := os.ReadFile(filepath.Join(cfg.ModelDir, "model.onnx"))
	if err != nil {
		return "", fmt.Errorf("demo: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.onnx"), model, 0o644); err != nil {
		return "", err
	}
	for name, rows := range map[string][][]float64{"pixels.json": ds.test[:4], "probabilities.json": ds.expected[:4]} {
		b, err := json.Marshal(rows)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, "golden", name), b, 0o644); err != nil {
			return "", err
		}
	}
	f, err := os.Create(filepath.Join(dir, "bundle.toml"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := bundleTOML.Execute(f, map[string]any{"ModelDir": cfg.ModelDir, "Probation": cfg.Probation.String(),
		"MinRequests": cfg.MinRequests}); err != nil {
		return "", err
	}
	return dir, f.Close()
}
