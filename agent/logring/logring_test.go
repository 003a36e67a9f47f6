package logring

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestRingKeepsFiltersAndForwards(t *testing.T) {
	var out bytes.Buffer
	next := slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn})
	r := New(3, slog.LevelDebug)
	log := slog.New(r.Handler(next))
	log.Debug("dial", "attempt", 1)
	log.With("component", "models").WithGroup("g").Info("loaded", "model", "digits")
	log.Warn("connect failed", "err", "refused")
	log.Error("journal", "err", "disk full")

	all, total := r.Entries(Filter{MinLevel: slog.LevelDebug})
	if total != 4 || len(all) != 3 {
		t.Fatalf("kept %d of %d, want the newest 3 of 4", len(all), total)
	}
	if all[0].Message != "loaded" || all[0].Attrs["component"] != "models" || all[0].Attrs["g.model"] != "digits" {
		t.Errorf("oldest kept: %+v", all[0])
	}
	if got, _ := r.Entries(Filter{MinLevel: slog.LevelWarn}); len(got) != 2 || got[0].Message != "connect failed" {
		t.Errorf("warn and above: %+v", got)
	}
	if got, _ := r.Entries(Filter{Contains: "DISK"}); len(got) != 1 || got[0].Level != "ERROR" {
		t.Errorf("substring in a value: %+v", got)
	}
	if got, _ := r.Entries(Filter{Limit: 1}); len(got) != 1 || got[0].Message != "journal" {
		t.Errorf("limit keeps the newest: %+v", got)
	}
	// The wrapped handler saw only what its own level allows.
	if s := out.String(); strings.Contains(s, "loaded") || !strings.Contains(s, "connect failed") || !strings.Contains(s, "disk full") {
		t.Errorf("forwarded:\n%s", s)
	}
}

func TestRingClipsLongValues(t *testing.T) {
	r := New(1, nil)
	slog.New(r.Handler(nil)).Info(strings.Repeat("m", 10000), "v", strings.Repeat("x", 10000))
	got, _ := r.Entries(Filter{})
	if len(got[0].Message) > maxValue+4 || len(got[0].Attrs["v"]) > maxValue+4 {
		t.Errorf("not clipped: %d, %d", len(got[0].Message), len(got[0].Attrs["v"]))
	}
}
