package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/flotilla-edge/flotilla/agent/diag"
)

// writeStatus renders a status for a person.
func writeStatus(w io.Writer, r diag.StatusReport) {
	if r.Source == diag.SourceDisk {
		fmt.Fprintln(w, "AGENT NOT RUNNING — from the on-disk state")
	} else {
		fmt.Fprintf(w, "agent %s, running\n", r.Version)
	}
	fmt.Fprintf(w, "data folder    %s\n", r.DataDir)
	if id := r.Identity; id != nil {
		cert := "password only"
		if id.Certificate {
			cert = "client certificate"
		}
		fmt.Fprintf(w, "device         %s (enrolled %s, %s)\n", id.DeviceID, when(id.EnrolledAt), cert)
		fmt.Fprintf(w, "broker         %s  prefix %s\n", id.MQTTURL, id.TopicPrefix)
	}
	if b := r.Broker; b != nil {
		line := b.State
		if !b.ConnectedSince.IsZero() {
			line += " since " + when(b.ConnectedSince)
		}
		fmt.Fprintf(w, "connection     %s; last contact %s\n", line, when(b.LastContact))
		if b.LastError != "" {
			fmt.Fprintf(w, "last error     %s\n", b.LastError)
		}
	}
	if r.ClockSkewSeconds != nil {
		fmt.Fprintf(w, "clock skew     %+.1f s (device − control plane, upper bound, measured %s)\n", *r.ClockSkewSeconds, when(r.SkewMeasuredAt))
	} else if r.Source == diag.SourceAgent {
		fmt.Fprintln(w, "clock skew     not measured yet (no command received)")
	}
	fmt.Fprintf(w, "desired state  revision %d\n", r.DesiredRevision)
	fmt.Fprintln(w)
	writeModels(w, r.Models)
	if len(r.Runtimes) > 0 {
		var parts []string
		for _, rt := range r.Runtimes {
			s := rt.Name
			switch {
			case rt.Started:
				s += " (running)"
			case rt.Failed != "":
				s += " (failed: " + rt.Failed + ")"
			}
			parts = append(parts, s)
		}
		fmt.Fprintf(w, "runtimes       %s\n", strings.Join(parts, ", "))
	}
	if len(r.Accelerators) == 0 {
		fmt.Fprintln(w, "accelerators   none found")
	}
	for _, a := range r.Accelerators {
		fmt.Fprintf(w, "accelerator    %s %s %s driver %s %s\n", a.Kind, a.Vendor, a.Model, a.Driver, a.Path)
	}
	if b := r.Buffer; b != nil {
		fmt.Fprintf(w, "telemetry      %d records, %d unsent summaries, %s; dropped %d, lost %d, evicted %d\n",
			b.Records, b.Pending, bytesOf(b.DatabaseBytes), b.Dropped, b.Lost, b.Evicted)
		if !b.OldestPendingFrom.IsZero() {
			fmt.Fprintf(w, "               oldest unacknowledged window from %s\n", when(b.OldestPendingFrom))
		}
		if b.LastWriteError != "" {
			fmt.Fprintf(w, "               last write error: %s\n", b.LastWriteError)
		}
	}
	d := r.Disk
	parts := make([]string, 0, len(d.Used))
	for k := range d.Used {
		parts = append(parts, k)
	}
	sort.Strings(parts)
	var used []string
	for _, k := range parts {
		u := k + " " + bytesOf(d.Used[k])
		if q := d.Quotas[k]; q > 0 {
			u += fmt.Sprintf(" of %s (%.0f%%)", bytesOf(q), 100*float64(d.Used[k])/float64(q))
		}
		used = append(used, u)
	}
	fmt.Fprintf(w, "disk           %s free of %s; %s\n", bytesOf(int64(d.FreeBytes)), bytesOf(int64(d.TotalBytes)), strings.Join(used, ", "))
	fmt.Fprintln(w)
	if len(r.RecentErrors) == 0 {
		fmt.Fprintln(w, "recent errors  none")
	} else {
		fmt.Fprintln(w, "recent errors")
		for _, e := range r.RecentErrors {
			code := e.Code
			if code == "" {
				code = e.Source
			}
			fmt.Fprintf(w, "  %s %-5s %-18s %s\n", e.At.Local().Format("01-02 15:04:05"), e.Level, code, e.Message)
		}
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "NOTE: %s\n", p)
	}
}

// writeModels renders the models as a table.
func writeModels(w io.Writer, ms []diag.ModelReport) {
	if len(ms) == 0 {
		fmt.Fprintln(w, "models         none")
		return
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tRELEASE\tVERSION\tSLOT\tPHASE\tHEALTH\tROLLBACK TO\tREQUESTS\tERRORS\tP95\tSLOTS ON DISK")
	for _, m := range ms {
		prev, reqs, errs, p95 := "-", "-", "-", "-"
		if m.PreviousRelease != 0 {
			prev = fmt.Sprint(m.PreviousRelease)
		}
		if m.Stats != nil {
			reqs, errs, p95 = fmt.Sprint(m.Stats.Requests), fmt.Sprint(m.Stats.Errors), fmt.Sprintf("%.1fms", m.Stats.P95Millis)
		}
		phase := m.Phase
		if !m.ProbationSince.IsZero() {
			phase += " since " + when(m.ProbationSince)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.ActiveRelease, dash(m.ActiveVersion), dash(m.ActiveSlot),
			phase, m.Health, prev, reqs, errs, p95, dash(strings.Join(m.Slots, ",")))
	}
	tw.Flush()
	for _, m := range ms {
		if m.CandidateRelease != 0 {
			fmt.Fprintf(w, "  %s: release %d staged, being activated\n", m.Name, m.CandidateRelease)
		}
		if m.RejectedRelease != 0 {
			fmt.Fprintf(w, "  %s: release %d rejected: %s\n", m.Name, m.RejectedRelease, m.RejectedReason)
		}
		if m.LastError != "" {
			fmt.Fprintf(w, "  %s: last error: %s\n", m.Name, m.LastError)
		}
	}
}

func attrs(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		v := m[k]
		if strings.ContainsAny(v, " \t\"") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %s=%s", k, v)
	}
	return b.String()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func when(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func bytesOf(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
