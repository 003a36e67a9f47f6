package flotctl

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/controlplane/baseline"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

const digitsTrain = "../baseline/testdata/digits/train.csv"

// TestBuildWithBaseline: `bundle build --baseline` puts the computed
// baseline and its minimum window size into the digits bundle's manifest,
// whose digest is that of the new encoding and which still validates.
func TestBuildWithBaseline(t *testing.T) {
	raw, digest, err := bundle.Build("../bundle/testdata/digits", bundle.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	b := addBaselineFlags(fs)
	if err := fs.Parse([]string{"--baseline", digitsTrain, "--baseline-prediction", "label", "--baseline-tensor", "pixels", "--baseline-window", "50"}); err != nil {
		t.Fatal(err)
	}
	if same, d, err := (&baselineFlags{}).apply("../bundle/testdata/digits", raw, digest); err != nil || d != digest || !bytes.Equal(same, raw) {
		t.Fatal("without --baseline the manifest changed")
	}
	out, d2, err := b.apply("../bundle/testdata/digits", raw, digest)
	if err != nil {
		t.Fatal(err)
	}
	if d2 == digest || d2 != bundle.Digest(out) {
		t.Fatalf("digest %s (was %s)", d2, digest)
	}
	var m pb.BundleManifest
	if err := wire.Decode(out, pb.MaxManifestSize, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.GetDrift().GetFeatures()) != 64 || m.GetDrift().GetFeatures()[5].GetTensor() != "pixels" ||
		len(m.GetDrift().GetPrediction().GetCategories()) != 10 || m.GetAnnotations()[summary.MinRecordsAnnotation] != "50" || m.GetDrift().GetMinWindowRecords() != 50 ||
		m.GetDrift().GetThresholds().GetJs() <= 0 || len(m.GetFiles()) == 0 {
		t.Fatalf("manifest drift %v annotations %v", m.GetDrift().GetThresholds(), m.GetAnnotations())
	}
	bad := &baselineFlags{data: filepath.Join(t.TempDir(), "missing.csv"), bins: 10, window: 100}
	if _, _, err := bad.apply("../bundle/testdata/digits", raw, digest); err == nil {
		t.Fatal("a missing data file was accepted")
	}
	garbage := filepath.Join(t.TempDir(), "g.csv")
	os.WriteFile(garbage, []byte("a,b\n1,x\n"), 0o600)
	bad.data = garbage
	if _, _, err := bad.apply("../bundle/testdata/digits", raw, digest); !errors.Is(err, baseline.ErrData) {
		t.Fatalf("garbage data: %v", err)
	}
}

func TestBundleBaselineJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "drift.json")
	if err := bundleBaseline(io.Discard, io.Discard, []string{digitsTrain, "-o", path, "-baseline-prediction", "label"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var d pb.DriftBaseline
	if err := protojson.Unmarshal(b, &d); err != nil || len(d.GetFeatures()) != 64 {
		t.Fatalf("drift.json: %d features, %v", len(d.GetFeatures()), err)
	}
	if err := bundleBaseline(io.Discard, io.Discard, nil); !errors.Is(err, errUsage) {
		t.Fatalf("no args: %v", err)
	}
}

// TestBundleBuildCommandBaseline runs `flotctl bundle build -baseline` the
// way an operator does and finds the baseline in the stored manifest, under
// the digest the command printed.
func TestBundleBuildCommandBaseline(t *testing.T) {
	store := filepath.Join(t.TempDir(), "digits.bundle")
	var buf bytes.Buffer
	err := bundleCmd(out{w: &buf, json: true}, io.Discard, []string{"build", "../bundle/testdata/digits", "-o", store,
		"-baseline", digitsTrain, "-baseline-prediction", "label", "-baseline-tensor", "pixels"})
	if err != nil {
		t.Fatal(err)
	}
	s, err := bundle.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	ents, err := os.ReadDir(filepath.Join(store, "manifests"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !bytes.Contains(buf.Bytes(), []byte(e.Name())) {
			continue
		}
		_, m, err := s.Manifest(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		if n := len(m.GetDrift().GetFeatures()); n < 2 {
			t.Fatalf("manifest %s has %d drift features", e.Name(), n)
		}
		found = true
	}
	if !found {
		t.Fatalf("no stored manifest under the printed digest: %s", buf.String())
	}
}
