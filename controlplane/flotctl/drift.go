package flotctl

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

// drift prints the drift of model releases for a device, a cohort or the
// fleet: a header per release, then one row per feature.
func drift(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("drift")
	var opt apiclient.DriftOptions
	fs.StringVar(&opt.Device, "device", "", "one device")
	fs.StringVar(&opt.Selector, "selector", "", "a cohort: labels k=v,…")
	fs.StringVar(&opt.Model, "model", "", "model (default: every model with telemetry)")
	fs.Uint64Var(&opt.Release, "release", 0, "one release of the model")
	fs.DurationVar(&opt.Since, "since", 0, "how far back (default 1h)")
	worst := fs.Int("worst", 0, "show only the N features with the highest JS")
	feature := fs.String("feature", "", "show only this feature (or prediction), with its histogram against the baseline")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return fmt.Errorf("%w: drift takes flags only: [-device ID | -selector k=v,…] [-model M [-release N]] [-since 1h] [-worst N | -feature NAME]", errUsage)
	case opt.Device != "" && opt.Selector != "":
		return fmt.Errorf("%w: give -device or -selector, not both", errUsage)
	case opt.Release > 0 && opt.Model == "":
		return fmt.Errorf("%w: -release needs -model", errUsage)
	case *worst < 0:
		return fmt.Errorf("%w: -worst must be positive", errUsage)
	case *worst > 0 && *feature != "":
		return fmt.Errorf("%w: give -worst or -feature, not both", errUsage)
	}
	rep, err := c.Drift(ctx, opt)
	if err != nil {
		return err
	}
	if *feature != "" && !hasFeature(rep, *feature) && len(rep.Releases) > 0 {
		return fmt.Errorf("no feature or prediction %q in the drift report", *feature)
	}
	return o.print(rep, func(tw io.Writer) { printDrift(tw, rep, *worst, *feature) })
}

// hasFeature reports whether a release of rep has the feature (or
// prediction) name.
func hasFeature(rep api.DriftReport, name string) bool {
	for _, r := range rep.Releases {
		if pickFeature(r, name) != nil {
			return true
		}
	}
	return false
}

// pickFeature returns the release's feature name, else its prediction of
// that name, or nil.
func pickFeature(r api.ReleaseDrift, name string) *api.FeatureDrift {
	for i := range r.Features {
		if r.Features[i].Name == name {
			return &r.Features[i]
		}
	}
	if p := r.Prediction; p != nil && (p.Name == name || name == "prediction:"+p.Name) {
		return p
	}
	return nil
}

// printDrift prints the report: per release a header and a row per
// feature, the worst features only when worst > 0, or only feature with
// its histogram when feature is set.
func printDrift(tw io.Writer, rep api.DriftReport, worst int, feature string) {
	scope := "fleet"
	switch {
	case rep.Device != "":
		scope = "device " + rep.Device
	case len(rep.Selector) > 0:
		scope = "cohort " + labelString(rep.Selector)
	}
	fmt.Fprintf(tw, "%s, windows starting %s to %s\n", scope, rep.From.Local().Format("2006-01-02 15:04"), rep.To.Local().Format("2006-01-02 15:04"))
	if len(rep.Releases) == 0 {
		fmt.Fprintln(tw, "no telemetry in range")
		return
	}
	for _, r := range rep.Releases {
		version := ""
		if r.Version != "" {
			version = " (" + r.Version + ")"
		}
		lat := "-"
		if l := r.LatencyMs; l != nil {
			lat = fmt.Sprintf("%.3g/%.3g/%.3g ms", l.P50, l.P95, l.P99)
		}
		fmt.Fprintf(tw, "\n%s release %d%s: %s\n", r.Model, r.Release, version, strings.ToUpper(r.State))
		fmt.Fprintf(tw, "  %d devices, %d windows, %d requests, error rate %.2f%%, latency p50/p95/p99 %s\n",
			r.Devices, r.Windows, r.Requests, 100*r.ErrorRate, lat)
		if !r.Baseline {
			fmt.Fprintln(tw, "  no drift baseline: the release's bundle is not on this control plane, or has none")
			continue
		}
		t := r.Thresholds
		fmt.Fprintf(tw, "  thresholds JS %.3g, PSI %.3g (warn %.3g), KS %.3g; judged from %d requests\n", t.JS, t.PSI, t.PSIWarn, t.KS, r.MinRecords)
		fmt.Fprintln(tw, "FEATURE\tJS\tPSI\tKS\tSTATE")
		if feature != "" {
			f := pickFeature(r, feature)
			if f == nil {
				fmt.Fprintf(tw, "  no feature %q in this release\n", feature)
				continue
			}
			printFeatureRow(tw, *f)
			printHistogram(tw, *f)
			continue
		}
		feats := append([]api.FeatureDrift(nil), r.Features...)
		if worst > 0 && worst < len(feats) {
			sort.SliceStable(feats, func(i, j int) bool { return feats[i].JS > feats[j].JS })
			feats = feats[:worst]
		}
		if r.Prediction != nil {
			p := *r.Prediction
			p.Name = "prediction:" + p.Name
			feats = append(feats, p)
		}
		for _, f := range feats {
			printFeatureRow(tw, f)
		}
	}
}

func printFeatureRow(tw io.Writer, f api.FeatureDrift) {
	if !f.Scored {
		fmt.Fprintf(tw, "%s\t-\t-\t-\t%s\n", f.Name, f.State)
		return
	}
	fmt.Fprintf(tw, "%s\t%.4f\t%.4f\t%.4f\t%s\n", f.Name, f.JS, f.PSI, f.KS, f.State)
}

// devicesEvents prints a device's events, newest first.
func devicesEvents(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("devices events")
	var opt apiclient.EventOptions
	level := fs.String("level", "", "info, warn, error (comma-separated)")
	fs.DurationVar(&opt.Since, "since", 0, "how far back (default: every event kept)")
	fs.IntVar(&opt.Limit, "limit", 50, "events")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	id, err := oneID(pos, "devices events")
	if err != nil {
		return err
	}
	if *level != "" {
		opt.Levels = strings.Split(*level, ",")
	}
	evs, err := c.DeviceEvents(ctx, id, opt)
	if err != nil {
		return err
	}
	return o.print(evs, func(tw io.Writer) {
		fmt.Fprintln(tw, "AT\tLEVEL\tCODE\tMESSAGE\tATTRS")
		for _, e := range evs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format("2006-01-02 15:04:05"), e.Level, e.Code, or(e.Message, "-"), labelString(e.Attrs))
		}
	})
}
