package flotctl

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

// deviceDiag is `flotctl devices diag ID [status|logs] [-level L] [-grep S]
// [-limit N]`: remote help, the device's own diagnostics (agent/diag)
// fetched through the command topic. The answer's JSON is the protocol
// (docs/protocol.md); only the fields shown are read here.
func deviceDiag(ctx context.Context, c *apiclient.Client, o out, args []string) error {
	fs := subFlags("devices diag")
	level := fs.String("level", "", "logs: least level (debug, info, warn, error)")
	grep := fs.String("grep", "", "logs: keep records containing this text")
	limit := fs.Uint("limit", 0, "logs: newest N records (0 = as many as fit 64 KiB)")
	timeout := fs.String("timeout", "20s", "wait this long for the device")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return fmt.Errorf("%w: devices diag ID [status|logs]", errUsage)
	}
	id, what := pos[0], "status"
	if len(pos) == 2 {
		what = pos[1]
	}
	if what != "status" && what != "logs" {
		return fmt.Errorf("%w: devices diag ID status|logs", errUsage)
	}
	r, err := c.CommandWith(ctx, id, api.CommandRequest{Kind: "diag-" + what, Timeout: *timeout, Level: *level, Contains: *grep, Limit: uint32(*limit)})
	if err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%s answered: %s", id, r.Error)
	}
	if o.json {
		_, err := o.w.Write(append(indentJSON(r.Output), '\n'))
		return err
	}
	if what == "logs" {
		return diagLogs(o.w, r.Output)
	}
	return diagStatus(o.w, id, r.Output)
}

func indentJSON(b []byte) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	out, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return b
	}
	return out
}

func diagLogs(w io.Writer, raw []byte) error {
	var r struct {
		Entries []struct {
			Time  time.Time         `json:"time"`
			Level string            `json:"level"`
			Msg   string            `json:"msg"`
			Attrs map[string]string `json:"attrs"`
		} `json:"entries"`
		Cut int `json:"cut_to_fit"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("device answer: %w", err)
	}
	if r.Cut > 0 {
		fmt.Fprintf(w, "(%d older records left out to fit the answer; narrow with -level, -grep or -limit)\n", r.Cut)
	}
	for _, e := range r.Entries {
		var attrs []string
		for k, v := range e.Attrs {
			attrs = append(attrs, k+"="+v)
		}
		fmt.Fprintf(w, "%s %-5s %s %s\n", e.Time.Local().Format("2006-01-02 15:04:05.000"), e.Level, e.Msg, strings.Join(attrs, " "))
	}
	return nil
}

func diagStatus(w io.Writer, id string, raw []byte) error {
	var r struct {
		Version string `json:"version"`
		Broker  struct {
			State       string    `json:"state"`
			LastContact time.Time `json:"last_contact"`
			LastError   string    `json:"last_error"`
		} `json:"broker"`
		Skew            *float64 `json:"clock_skew_seconds"`
		DesiredRevision uint64   `json:"desired_revision"`
		Models          []struct {
			Name          string `json:"name"`
			ActiveRelease uint64 `json:"active_release"`
			Phase         string `json:"phase"`
			Health        string `json:"health"`
			LastError     string `json:"last_error"`
		} `json:"models"`
		Buffer *struct {
			Pending int64 `json:"pending"`
		} `json:"buffer"`
		Disk struct {
			FreeBytes  uint64 `json:"free_bytes"`
			TotalBytes uint64 `json:"total_bytes"`
		} `json:"disk"`
		RecentErrors []struct {
			At      time.Time `json:"at"`
			Level   string    `json:"level"`
			Message string    `json:"message"`
		} `json:"recent_errors"`
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		return fmt.Errorf("device answer: %w", err)
	}
	fmt.Fprintf(w, "%s: agent %s, %s, desired revision %d\n", id, r.Version, r.Broker.State, r.DesiredRevision)
	if r.Skew != nil {
		fmt.Fprintf(w, "clock skew %+.1f s\n", *r.Skew)
	}
	if r.Buffer != nil {
		fmt.Fprintf(w, "telemetry: %d unsent summaries\n", r.Buffer.Pending)
	}
	fmt.Fprintf(w, "disk: %d MiB free of %d MiB\n", r.Disk.FreeBytes>>20, r.Disk.TotalBytes>>20)
	for _, m := range r.Models {
		fmt.Fprintf(w, "model %s: release %d, %s, %s %s\n", m.Name, m.ActiveRelease, m.Phase, m.Health, m.LastError)
	}
	for _, e := range r.RecentErrors {
		fmt.Fprintf(w, "%s %s %s\n", e.At.Local().Format("01-02 15:04:05"), e.Level, e.Message)
	}
	return nil
}
