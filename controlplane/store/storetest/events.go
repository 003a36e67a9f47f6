package storetest

import (
	"context"
	"errors"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func eventMsg(device string, seq uint64, at int64, levels ...string) store.TelemetryMessage {
	m := store.TelemetryMessage{DeviceID: device, Epoch: "e1", Sequence: seq, ReceivedAt: now + int64(seq)}
	for i, l := range levels {
		m.Events = append(m.Events, store.Event{AtMs: at + int64(i), Level: l, Code: "model." + l,
			Message: "m", Attrs: map[string]string{"i": string(rune('0' + i))}})
	}
	return m
}

// testEvents: events are stored once per (device, epoch, sequence), with
// summaries sharing the ledger; listed per device newest first, filtered
// by time and level; retention deletes them by reception time.
func testEvents(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 2, nil)
	dup, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{
		eventMsg("dev-000", 1, 1000, "info", "error"),
		eventMsg("dev-000", 2, 2000, "warn"),
		eventMsg("dev-001", 1, 1500, "error"),
		eventMsg("dev-000", 1, 1000, "info", "error"), // resent
	})
	if err != nil || dup[0] || dup[1] || dup[2] || !dup[3] {
		t.Fatalf("store: %v %v", dup, err)
	}
	// A summary message with a sequence already used by events is a duplicate.
	if dup, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-000", 2, 0)}); err != nil || !dup[0] {
		t.Fatalf("shared ledger: %v %v", dup, err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{DeviceID: "dev-000"})
	if err != nil || len(evs) != 3 {
		t.Fatalf("list: %+v %v", evs, err)
	}
	if evs[0].AtMs != 2000 || evs[0].Level != "warn" || evs[1].AtMs != 1001 || evs[1].Code != "model.error" ||
		evs[1].Attrs["i"] != "1" || evs[2].Sequence != 1 || evs[2].Index != 0 || evs[2].ReceivedAt != now+1 {
		t.Fatalf("order or fields: %+v", evs)
	}
	for name, c := range map[string]struct {
		f    store.EventFilter
		want int
	}{
		"time":   {store.EventFilter{DeviceID: "dev-000", FromMs: 1001, ToMs: 2000}, 1},
		"levels": {store.EventFilter{DeviceID: "dev-000", Levels: []string{"error", "warn"}}, 2},
		"limit":  {store.EventFilter{DeviceID: "dev-000", Limit: 1}, 1},
		"other":  {store.EventFilter{DeviceID: "dev-001"}, 1},
		"none":   {store.EventFilter{DeviceID: "dev-404"}, 0},
	} {
		if evs, err := s.ListEvents(ctx, c.f); err != nil || len(evs) != c.want {
			t.Errorf("%s: %d events, %v; want %d", name, len(evs), err, c.want)
		}
	}
	if _, err := s.ListEvents(ctx, store.EventFilter{}); !errors.Is(err, store.ErrInvalid) {
		t.Errorf("no device: %v", err)
	}
	if _, err := s.DeleteTelemetryBefore(ctx, store.TelemetryRetention{EventsBefore: now + 2}); err != nil {
		t.Fatal(err)
	}
	if evs, _ := s.ListEvents(ctx, store.EventFilter{DeviceID: "dev-000"}); len(evs) != 1 || evs[0].Sequence != 2 {
		t.Fatalf("after retention: %+v", evs)
	}
	// TelemetryModels: from summaries, per device.
	if _, err := s.StoreTelemetry(ctx, []store.TelemetryMessage{telemetryMsg("dev-001", 9, 60_000)}); err != nil {
		t.Fatal(err)
	}
	if ms, err := s.TelemetryModels(ctx, "", 0, 120_000); err != nil || len(ms) != 1 || ms[0] != "m" {
		t.Fatalf("models: %v %v", ms, err)
	}
	if ms, err := s.TelemetryModels(ctx, "dev-000", 0, 120_000); err != nil || len(ms) != 0 {
		t.Fatalf("models of dev-000: %v %v", ms, err)
	}
}
