package flotctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/controlplane/baseline"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// baselineFlags are the drift-baseline flags of `bundle build` (and of
// `bundle baseline`).
type baselineFlags struct {
	data, prediction, tensor, exclude, monitorNames string
	bins, window                                    int
}

func addBaselineFlags(fs *flag.FlagSet) *baselineFlags {
	b := &baselineFlags{}
	fs.StringVar(&b.data, "baseline", "", "reference data (CSV with a header) to compute the drift baseline from")
	fs.StringVar(&b.prediction, "baseline-prediction", "", "CSV column holding the model's prediction for each row")
	fs.StringVar(&b.tensor, "baseline-tensor", "", "input tensor the feature columns are elements of")
	fs.StringVar(&b.exclude, "baseline-exclude", "label", "comma-separated columns not to monitor")
	fs.IntVar(&b.bins, "baseline-bins", 10, "quantile bins per numeric feature, before duplicate edges are removed")
	fs.IntVar(&b.window, "baseline-window", summary.DefaultMinRecords, "records per window the thresholds are computed for, and the fewest a window needs to be scored")
	fs.StringVar(&b.monitorNames, "baseline-monitor-names", "", "comma-separated names of the bundle's monitor function results (default monitor.0, monitor.1, …)")
	return b
}

// compute computes the baseline; with mon (the bundle's monitor
// function) the feature columns are its input and its results the
// features.
func (b *baselineFlags) compute(mon baseline.Monitor) (*baseline.Result, error) {
	f, err := os.Open(b.data)
	if err != nil {
		return nil, fmt.Errorf("baseline: %w", err)
	}
	defer f.Close()
	excl := splitList(b.exclude)
	opt := baseline.Options{Exclude: excl, PredictionColumn: b.prediction, Tensor: b.tensor,
		Bins: b.bins, WindowRecords: b.window, Monitor: mon}
	if mon != nil {
		opt.MonitorNames = splitList(b.monitorNames)
	}
	res, err := baseline.FromCSV(f, opt)
	if err != nil {
		return nil, fmt.Errorf("baseline %s: %w", b.data, err)
	}
	return res, nil
}

func splitList(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// apply puts the baseline computed from --baseline into the manifest raw
// of the bundle in folder dir and returns the new manifest and digest;
// without --baseline it returns them unchanged. With a monitor function
// in the manifest, the function computes the features from the reference
// rows, as devices do (its file is one of the bundle's, so the digest
// covers it). Thresholds the bundle's config set are kept where they are
// tighter than the reference data's variability.
func (b *baselineFlags) apply(dir string, raw []byte, digest string) ([]byte, string, error) {
	if b.data == "" {
		return raw, digest, nil
	}
	var m pb.BundleManifest
	if err := wire.Decode(raw, pb.MaxManifestSize, &m); err != nil {
		return nil, "", err
	}
	var mon baseline.Monitor
	if m.GetMonitor() != nil {
		bm, err := baseline.MonitorFromBundle(context.Background(), dir, &m, monitorfn.Config{})
		if err != nil {
			return nil, "", fmt.Errorf("baseline: %w", err)
		}
		defer bm.Close()
		mon = bm.Features
	}
	res, err := b.compute(mon)
	if err != nil {
		return nil, "", err
	}
	t := summary.EffectiveThresholds(m.GetDrift().GetThresholds(), res.Variability)
	res.Drift.Thresholds = &pb.DriftThresholds{Js: t.JS, Psi: t.PSI, Ks: t.KS}
	m.Drift = res.Drift
	if m.Annotations == nil {
		m.Annotations = map[string]string{}
	}
	m.Annotations[summary.MinRecordsAnnotation] = strconv.FormatUint(res.MinRecords, 10)
	if err := m.Validate(); err != nil {
		return nil, "", fmt.Errorf("baseline: %w", err)
	}
	out, err := wire.Encode(&m)
	if err != nil {
		return nil, "", err
	}
	if len(out) > pb.MaxManifestSize {
		return nil, "", fmt.Errorf("baseline: manifest is %d bytes, at most %d", len(out), pb.MaxManifestSize)
	}
	return out, bundle.Digest(out), nil
}

// bundleBaseline is `flotctl bundle baseline DATA.csv [-o drift.json]`:
// the baseline as the protobuf JSON a bundle config's [drift] file names,
// with the thresholds and minimum window size it implies.
func bundleBaseline(stdout, stderr io.Writer, args []string) error {
	fs := flag.NewFlagSet("bundle baseline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	b := addBaselineFlags(fs)
	outPath := fs.String("o", "", "write the JSON here instead of standard output")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: bundle baseline DATA.csv [-o FILE] [-baseline-prediction COL] [-baseline-tensor NAME]", errUsage)
	}
	b.data = pos[0]
	res, err := b.compute(nil)
	if err != nil {
		return err
	}
	js, err := protojson.MarshalOptions{Multiline: true}.Marshal(res.Drift)
	if err != nil {
		return err
	}
	js = append(js, '\n')
	fmt.Fprintf(stderr, "%d rows, %d features; thresholds js %.4g psi %.4g ks %.4g for windows of %d (annotation %s = %d)\n",
		res.Rows, len(res.Drift.GetFeatures()), res.Drift.GetThresholds().GetJs(), res.Drift.GetThresholds().GetPsi(),
		res.Drift.GetThresholds().GetKs(), res.MinRecords, summary.MinRecordsAnnotation, res.MinRecords)
	if *outPath == "" {
		_, err = stdout.Write(js)
		return err
	}
	return os.WriteFile(*outPath, js, 0o644)
}
