package storetest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// testReports: a device's report replaces its previous one; a refused
// batch stores nothing; listing pages by device ID; the device's desired
// revision is read with it.
func testReports(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var batch []store.DeviceReport
	for i := range 5 {
		batch = append(batch, store.DeviceReport{DeviceID: fmt.Sprintf("dev-%d", i), DesiredRevision: uint64(i + 1), ReceivedAt: now, Payload: []byte{byte(i)}})
	}
	must(t, s.PutReports(ctx, batch))
	must(t, s.PutReports(ctx, []store.DeviceReport{
		{DeviceID: "dev-1", DesiredRevision: 7, ReceivedAt: now + 1, Payload: []byte("old")},
		{DeviceID: "dev-1", DesiredRevision: 8, ReceivedAt: now + 2, Payload: []byte("new")},
	}))
	wantErr(t, s.PutReports(ctx, []store.DeviceReport{
		{DeviceID: "dev-2", DesiredRevision: 9, ReceivedAt: now + 3, Payload: []byte("x")},
		{DeviceID: "dev-3", ReceivedAt: now + 3},
	}), store.ErrInvalid)
	wantErr(t, s.PutReports(ctx, []store.DeviceReport{{DeviceID: "../x", ReceivedAt: now, Payload: []byte("x")}}), store.ErrInvalid)
	wantErr(t, s.PutReports(ctx, []store.DeviceReport{{DeviceID: "dev-4", ReceivedAt: now, Payload: bytes.Repeat([]byte("x"), store.MaxReportBytes+1)}}), store.ErrInvalid)

	var all []store.DeviceReport
	after := ""
	for {
		page, err := s.ListReports(ctx, after, 2)
		must(t, err)
		all = append(all, page...)
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].DeviceID
	}
	if len(all) != 5 {
		t.Fatalf("listed %d reports, want 5: %+v", len(all), all)
	}
	for i, r := range all {
		want := store.DeviceReport{DeviceID: fmt.Sprintf("dev-%d", i), DesiredRevision: uint64(i + 1), ReceivedAt: now, Payload: []byte{byte(i)}}
		if i == 1 {
			want = store.DeviceReport{DeviceID: "dev-1", DesiredRevision: 8, ReceivedAt: now + 2, Payload: []byte("new")}
		}
		if r.DeviceID != want.DeviceID || r.DesiredRevision != want.DesiredRevision || r.ReceivedAt != want.ReceivedAt || !bytes.Equal(r.Payload, want.Payload) {
			t.Errorf("report %d: %+v, want %+v", i, r, want)
		}
	}
	if page, err := s.ListReports(ctx, "dev-2", 0); err != nil || len(page) != 2 || page[0].DeviceID != "dev-3" {
		t.Fatalf("after dev-2: %+v %v", page, err)
	}

	devs := Enrol(t, s, 1, nil)
	if d := mustDevice(t, s, devs[0].ID); d.DesiredRevision != 0 {
		t.Fatalf("new device at desired revision %d", d.DesiredRevision)
	}
	for range 3 {
		_, err := s.NextDesiredRevision(ctx, devs[0].ID)
		must(t, err)
	}
	if d := mustDevice(t, s, devs[0].ID); d.DesiredRevision != 3 {
		t.Fatalf("desired revision %d, want 3", d.DesiredRevision)
	}
	listed, err := s.ListDevices(ctx, store.ListOptions{})
	must(t, err)
	for _, d := range listed {
		if d.ID == devs[0].ID && d.DesiredRevision != 3 {
			t.Fatalf("listed at desired revision %d, want 3", d.DesiredRevision)
		}
	}
}
