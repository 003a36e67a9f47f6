package flotctl

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

func subFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// parseInterspersed parses flags that may come after positional arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func oneID(args []string, what string) (string, error) {
	if len(args) != 1 {
		return "", fmt.Errorf("%w: %s takes one ID", errUsage, what)
	}
	return args[0], nil
}

func devices(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: devices list|show|label|decommission|ping|resync|diag|support-bundle", errUsage)
	}
	verb, args := args[0], args[1:]
	switch verb {
	case "list", "ls":
		fs := subFlags("devices list")
		sel := fs.String("selector", "", "labels k=v,…")
		online := fs.String("online", "", "true or false")
		all := fs.Bool("all", false, "include decommissioned devices")
		if _, err := parseInterspersed(fs, args); err != nil {
			return err
		}
		opts := apiclient.ListOptions{Selector: *sel, Decommissioned: *all}
		if *online != "" {
			b, err := strconv.ParseBool(*online)
			if err != nil {
				return fmt.Errorf("%w: -online must be true or false", errUsage)
			}
			opts.Online = &b
		}
		devs, err := c.ListDevices(ctx, opts)
		if err != nil {
			return err
		}
		if devs == nil {
			devs = []api.DeviceView{}
		}
		return o.print(devs, func(tw io.Writer) {
			fmt.Fprintln(tw, "ID\tSTATE\tLAST SEEN\tAGENT\tLABELS")
			for _, d := range devs {
				state := "offline"
				switch {
				case d.DecommissionedAt != nil:
					state = "decommissioned"
				case d.Online:
					state = "online"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.ID, state, ago(d.LastSeen), or(d.AgentVersion, "-"), labelString(d.Labels))
			}
		})
	case "assign":
		return devicesAssign(ctx, c, o, args)
	case "progress":
		return devicesProgress(ctx, c, o, args)
	case "events":
		return devicesEvents(ctx, c, o, args)
	case "show", "get":
		id, err := oneID(args, "devices show")
		if err != nil {
			return err
		}
		d, err := c.Device(ctx, id)
		if err != nil {
			return err
		}
		return o.print(d, func(tw io.Writer) {
			fmt.Fprintf(tw, "ID\t%s\n", d.ID)
			fmt.Fprintf(tw, "Online\t%v (since %s)\n", d.Online, when(d.StatusChangedAt))
			fmt.Fprintf(tw, "Last seen\t%s\n", ago(d.LastSeen))
			fmt.Fprintf(tw, "Enrolled\t%s\n", when(&d.EnrolledAt))
			if d.DecommissionedAt != nil {
				fmt.Fprintf(tw, "Decommissioned\t%s\n", when(d.DecommissionedAt))
			}
			fmt.Fprintf(tw, "Agent\t%s (protocol %d)\n", or(d.AgentVersion, "-"), d.ProtocolVersion)
			fmt.Fprintf(tw, "mTLS\t%v\n", d.MTLS)
			fmt.Fprintf(tw, "Labels\t%s\n", labelString(d.Labels))
			if len(d.Facts) > 0 {
				fmt.Fprintf(tw, "Facts\t%s\n", d.Facts)
			}
		})
	case "label":
		if len(args) < 2 {
			return fmt.Errorf("%w: devices label ID k=v… [-k…]", errUsage)
		}
		id := args[0]
		set := map[string]string{}
		var remove []string
		for _, a := range args[1:] {
			if k, ok := strings.CutPrefix(a, "-"); ok && !strings.Contains(a, "=") {
				remove = append(remove, k)
				continue
			}
			m, err := parseKV([]string{a})
			if err != nil {
				return err
			}
			for k, v := range m {
				set[k] = v
			}
		}
		d, err := c.Label(ctx, id, set, remove)
		if err != nil {
			return err
		}
		return o.print(d, func(tw io.Writer) { fmt.Fprintf(tw, "%s\t%s\n", d.ID, labelString(d.Labels)) })
	case "decommission":
		id, err := oneID(args, "devices decommission")
		if err != nil {
			return err
		}
		d, err := c.Decommission(ctx, id)
		if err != nil {
			return err
		}
		return o.print(d, func(tw io.Writer) { fmt.Fprintf(tw, "%s\tdecommissioned %s\n", d.ID, when(d.DecommissionedAt)) })
	case "ping", "resync":
		id, err := oneID(args, "devices "+verb)
		if err != nil {
			return err
		}
		r, err := c.Command(ctx, id, verb, "")
		if err != nil {
			return err
		}
		if err := o.print(r, func(tw io.Writer) {
			fmt.Fprintf(tw, "%s\t%s ok=%v round trip %.1f ms %s\n", id, verb, r.OK, r.RoundTripMs, r.Error)
		}); err != nil {
			return err
		}
		if !r.OK {
			return fmt.Errorf("%s answered: %s", id, r.Error)
		}
		return nil
	case "diag":
		return deviceDiag(ctx, c, o, args)
	case "support-bundle":
		return deviceSupport(ctx, c, o, args)
	}
	return fmt.Errorf("%w: unknown devices command %q", errUsage, verb)
}

func apiTokens(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: tokens list|create|revoke", errUsage)
	}
	switch args[0] {
	case "list", "ls":
		toks, err := c.ListAPITokens(ctx)
		if err != nil {
			return err
		}
		return o.print(toks, func(tw io.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tROLE\tEXPIRES\tREVOKED\tLAST USED")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, when(t.ExpiresAt), when(t.RevokedAt), ago(t.LastUsedAt))
			}
		})
	case "create":
		fs := subFlags("tokens create")
		var req api.APITokenRequest
		fs.StringVar(&req.Name, "name", "", "what the token is for")
		fs.StringVar(&req.Role, "role", "viewer", "viewer, operator or admin")
		fs.StringVar(&req.TTL, "ttl", "", "lifetime (Go duration); empty: no expiry")
		if _, err := parseInterspersed(fs, args[1:]); err != nil {
			return err
		}
		t, err := c.CreateAPIToken(ctx, req)
		if err != nil {
			return err
		}
		return o.print(t, func(tw io.Writer) {
			fmt.Fprintf(tw, "ID\t%s\nRole\t%s\nToken\t%s\n(the token is shown once)\n", t.ID, t.Role, t.Token)
		})
	case "revoke":
		id, err := oneID(args[1:], "tokens revoke")
		if err != nil {
			return err
		}
		return c.RevokeAPIToken(ctx, id)
	}
	return fmt.Errorf("%w: unknown tokens command %q", errUsage, args[0])
}

func enrolTokens(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: enrol-tokens list|create|revoke", errUsage)
	}
	switch args[0] {
	case "list", "ls":
		toks, err := c.ListEnrolTokens(ctx)
		if err != nil {
			return err
		}
		return o.print(toks, func(tw io.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tUSES\tEXPIRES\tREVOKED\tLABELS")
			for _, t := range toks {
				max := "∞"
				if t.MaxUses > 0 {
					max = strconv.Itoa(t.MaxUses)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d/%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Uses, max, when(t.ExpiresAt), when(t.RevokedAt), labelString(t.Labels))
			}
		})
	case "create":
		fs := subFlags("enrol-tokens create")
		var req api.EnrolTokenRequest
		var labels multi
		fs.StringVar(&req.Name, "name", "", "what the token is for (e.g. factory line 2)")
		fs.IntVar(&req.MaxUses, "max-uses", 1, "devices it may enrol (0: unlimited until expiry)")
		fs.StringVar(&req.TTL, "ttl", "24h", "lifetime (Go duration)")
		fs.Var(&labels, "label", "k=v given to every device enrolled with it (repeatable)")
		if _, err := parseInterspersed(fs, args[1:]); err != nil {
			return err
		}
		if len(labels) > 0 {
			m, err := parseKV(labels)
			if err != nil {
				return err
			}
			req.Labels = m
		}
		t, err := c.CreateEnrolToken(ctx, req)
		if err != nil {
			return err
		}
		return o.print(t, func(tw io.Writer) {
			fmt.Fprintf(tw, "ID\t%s\nExpires\t%s\nToken\t%s\n(the token is shown once)\n", t.ID, when(t.ExpiresAt), t.Token)
		})
	case "revoke":
		id, err := oneID(args[1:], "enrol-tokens revoke")
		if err != nil {
			return err
		}
		return c.RevokeEnrolToken(ctx, id)
	}
	return fmt.Errorf("%w: unknown enrol-tokens command %q", errUsage, args[0])
}

func audit(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("audit")
	limit := fs.Int("limit", 50, "entries")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	entries, err := c.Audit(ctx, *limit)
	if err != nil {
		return err
	}
	return o.print(entries, func(tw io.Writer) {
		fmt.Fprintln(tw, "ID\tAT\tACTOR\tACTION\tTARGET\tDETAIL")
		for _, e := range entries {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.At.Local().Format("2006-01-02 15:04:05"), e.Actor, e.Action, e.Target, e.Detail)
		}
	})
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }
