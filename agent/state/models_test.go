package state

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestSaveModelRoundTripsAndJournals(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data")
	db, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	start := time.UnixMilli(1_700_000_000_123)
	rec := ModelRecord{
		Name: "digits", Phase: "probation",
		Active:         ModelSlot{Slot: "b", Release: 2, Version: "1.1", Digest: "bb", Manifest: []byte{1, 2}},
		Previous:       ModelSlot{Slot: "a", Release: 1, Version: "1.0", Digest: "aa", Manifest: []byte{3}},
		ProbationStart: start, Attempts: 1, RejectedDigest: "cc", RejectedRel: 3, RejectedReason: "golden",
		Health: "probation", LastError: "x", Rollbacks: 4,
	}
	if err := db.SaveModel(ctx, rec, Event{Level: "info", Code: "model.switched", Message: "digits 1 → 2"}); err != nil {
		t.Fatal(err)
	}
	if err := db.SaveModel(ctx, ModelRecord{Name: "", Phase: "idle"}, Event{}); err == nil {
		t.Error("a record without a name was saved")
	}
	db.Close()
	db, err = Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.Models(ctx)
	if err != nil || len(got) != 1 {
		t.Fatalf("Models = %v, %v", got, err)
	}
	g := got[0]
	if g.Phase != "probation" || g.Active.Slot != "b" || g.Active.Release != 2 || string(g.Active.Manifest) != "\x01\x02" ||
		g.Previous.Digest != "aa" || !g.Candidate.Empty() || !g.ProbationStart.Equal(start) || g.Attempts != 1 ||
		g.RejectedRel != 3 || g.RejectedReason != "golden" || g.Rollbacks != 4 {
		t.Errorf("round trip: %+v", g)
	}
	ev, err := db.Recent(ctx, 1)
	if err != nil || len(ev) != 1 || ev[0].Code != "model.switched" {
		t.Errorf("journal: %v, %v", ev, err)
	}
	if err := db.DeleteModel(ctx, "digits"); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.Models(ctx); len(got) != 0 {
		t.Errorf("after delete: %v", got)
	}
}
