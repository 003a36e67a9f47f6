package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/benchreport"
)

// TestRefusesUnbalancedDocBeforeMeasuring: a document with a begin marker
// but no end marker is refused before any benchmark runs (the go command
// given does not exist, so running one would fail differently), and the
// file is left as it was.
func TestRefusesUnbalancedDocBeforeMeasuring(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	orig := "# Benchmarks\n" + benchreport.BeginMarker + "\nhalf a section\n"
	if err := os.WriteFile(doc, []byte(orig), 0o644); err != nil {
		t.Fatal(err)
	}
	err := run(1, doc, false, "", filepath.Join(t.TempDir(), "no-such-go"), "")
	if err == nil || !strings.Contains(err.Error(), "markers unbalanced") {
		t.Fatalf("err = %v, want the markers refused", err)
	}
	if got, _ := os.ReadFile(doc); string(got) != orig {
		t.Errorf("the document changed: %q", got)
	}
}

func TestRejectsBadFlags(t *testing.T) {
	if err := run(0, "", true, "", "go", ""); err == nil {
		t.Error("-count 0 accepted")
	}
	if err := run(1, "", true, "(", "go", ""); err == nil {
		t.Error("an invalid -only accepted")
	}
}
