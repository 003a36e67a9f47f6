package flotctl

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

// maxSpecFile caps a rollout spec file read by rollout create.
const maxSpecFile = 256 << 10

// rollouts runs the rollout commands. watchCtx has no -timeout: a watch
// runs until the rollout is over or the operator stops it.
func rollouts(ctx, watchCtx context.Context, c *apiclient.Client, o out, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: rollout create|list|show|watch|pause|resume|promote|abort", errUsage)
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "create":
		fs := subFlags("rollout create")
		file := fs.String("f", "", "the rollout spec (YAML or JSON); - reads standard input")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		if *file == "" || len(pos) > 0 {
			return fmt.Errorf("%w: rollout create -f spec.yaml", errUsage)
		}
		spec, err := readSpec(*file)
		if err != nil {
			return err
		}
		v, err := c.CreateRollout(ctx, spec)
		if err != nil {
			return err
		}
		return o.print(v, func(tw io.Writer) { fmt.Fprintf(tw, "created rollout %s\n", v.ID); printRollout(tw, v) })
	case "list", "ls":
		fs := subFlags("rollout list")
		model := fs.String("model", "", "one model")
		phase := fs.String("phase", "", "running, paused, rolling_back, rolled_back, completed")
		limit := fs.Int("limit", 0, "at most N")
		if _, err := parseInterspersed(fs, args); err != nil {
			return err
		}
		vs, err := c.ListRollouts(ctx, *model, *phase, *limit)
		if err != nil {
			return err
		}
		return o.print(vs, func(tw io.Writer) {
			fmt.Fprintln(tw, "ID\tMODEL\tRELEASE\tPHASE\tSTAGE\tDEVICES\tCREATED BY\tCREATED")
			for _, v := range vs {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d/%d\t%s\t%s\t%s\n", v.ID, v.Model, v.Release, v.Phase, v.Stage+1, v.Stages,
					countsString(v.Devices), v.CreatedBy, v.CreatedAt.Local().Format(time.RFC3339))
			}
		})
	case "show":
		fs := subFlags("rollout show")
		devs := fs.Bool("devices", false, "list each device's state")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(pos, "rollout show")
		if err != nil {
			return err
		}
		v, err := c.Rollout(ctx, id, *devs)
		if err != nil {
			return err
		}
		return o.print(v, func(tw io.Writer) { printRollout(tw, v) })
	case "watch":
		fs := subFlags("rollout watch")
		every := fs.Duration("every", 2*time.Second, "redraw interval")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(pos, "rollout watch")
		if err != nil {
			return err
		}
		if *every < 100*time.Millisecond {
			return fmt.Errorf("%w: -every must be at least 100ms", errUsage)
		}
		return watchRollout(watchCtx, c, o, id, *every)
	case "pause", "resume", "promote", "abort":
		fs := subFlags("rollout " + verb)
		reason := fs.String("reason", "", "why, for the audit log")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(pos, "rollout "+verb)
		if err != nil {
			return err
		}
		v, err := c.RolloutAction(ctx, id, verb, *reason)
		if err != nil {
			return err
		}
		return o.print(v, func(tw io.Writer) { printRollout(tw, v) })
	case "audit":
		fs := subFlags("rollout audit")
		limit := fs.Int("limit", 0, "at most N entries")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return err
		}
		id, err := oneID(pos, "rollout audit")
		if err != nil {
			return err
		}
		es, err := c.RolloutAudit(ctx, id, *limit)
		if err != nil {
			return err
		}
		return o.print(es, func(tw io.Writer) {
			fmt.Fprintln(tw, "AT\tACTOR\tACTION\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.At.Local().Format(time.RFC3339), e.Actor, e.Action, e.Detail)
			}
		})
	}
	return fmt.Errorf("%w: unknown rollout command %q (create, list, show, watch, pause, resume, promote, abort, audit)", errUsage, verb)
}

func readSpec(name string) ([]byte, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSpecFile+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxSpecFile {
		return nil, fmt.Errorf("%s: over %d bytes", name, maxSpecFile)
	}
	return b, nil
}

// watchRollout redraws the rollout every interval until it is rolled back
// or ctx ends; with -json it prints one JSON document per redraw.
func watchRollout(ctx context.Context, c *apiclient.Client, o out, id string, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		v, err := c.Rollout(rctx, id, false)
		cancel()
		if err != nil {
			return err
		}
		if !o.json {
			fmt.Fprint(o.w, "\x1b[H\x1b[2J") // home, clear: redraw in place
		}
		if err := o.print(v, func(tw io.Writer) { printRollout(tw, v) }); err != nil {
			return err
		}
		if v.Phase == "rolled_back" {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// devicePhases are the device phases in the order shown.
var devicePhases = []string{"assigned", "committed", "failed", "rolling_back", "rolled_back", "stranded", "skipped", "incompatible"}

func printRollout(tw io.Writer, v api.RolloutView) {
	name := v.Name
	if name != "" {
		name = " (" + name + ")"
	}
	fmt.Fprintf(tw, "rollout %s%s: %s release %d\n", v.ID, name, v.Model, v.Release)
	stage := fmt.Sprintf("%d of %d", v.Stage+1, v.Stages)
	if v.StageName != "" {
		stage += " " + v.StageName
	}
	fmt.Fprintf(tw, "phase %s, stage %s, failure policy %s\n", v.Phase, stage, v.Policy)
	if v.Reason != "" {
		fmt.Fprintf(tw, "reason: %s\n", v.Reason)
	}
	total := 0
	for _, n := range v.Devices {
		total += n
	}
	fmt.Fprintf(tw, "devices (%d touched):\n", total)
	for _, p := range devicePhases {
		if n := v.Devices[p]; n > 0 {
			fmt.Fprintf(tw, "  %s\t%s\t%d\n", p, bar(n, total, 30), n)
		}
	}
	if len(v.Gates) > 0 {
		fmt.Fprintln(tw, "GATE\tSTATUS\tVALUE\tBASELINE\tLIMIT\tDETAIL")
		for _, g := range v.Gates {
			base := "-"
			if g.HasBaseline {
				base = fmt.Sprintf("%.4g", g.Baseline)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.4g\t%s\t%s\t%s\n", g.Gate, g.Status, g.Value, base, g.Limit, g.Detail)
		}
	}
	for _, d := range v.DeviceStates {
		fmt.Fprintf(tw, "  %s\t%s\tstage %d\t%s\n", d.Device, d.Phase, d.Stage+1, d.Reason)
	}
}

// bar is a progress bar of n out of total, width cells wide.
func bar(n, total, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat(" ", width) + "]"
	}
	full := min(width, n*width/total)
	return "[" + strings.Repeat("#", full) + strings.Repeat(".", width-full) + "]"
}

func countsString(m map[string]int) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return strings.Join(parts, ",")
}
