package storetest

import (
	"context"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testSetStatusOrdering(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 1, nil)
	const id = "dev-000"
	steps := []struct {
		online      bool
		at          int64
		changed     bool
		wantOnline  bool
		wantChanged int64 // StatusChangedAt after
		wantSeen    int64
	}{
		{true, now + 100, true, true, now + 100, now + 100},
		{false, now + 50, false, true, now + 100, now + 100},  // older: ignored
		{true, now + 150, false, true, now + 150, now + 150},  // same status, newer
		{false, now + 300, true, false, now + 300, now + 300}, // last will
		{true, now + 200, false, false, now + 300, now + 300}, // late retained online: ignored
		{true, now + 300, true, true, now + 300, now + 300},   // same time: applied
	}
	for i, st := range steps {
		changed, err := s.SetStatus(ctx, id, st.online, st.at)
		must(t, err)
		d := mustDevice(t, s, id)
		if changed != st.changed || d.Online != st.wantOnline || d.StatusChangedAt != st.wantChanged || d.LastSeen != st.wantSeen {
			t.Fatalf("step %d: changed=%v online=%v statusChangedAt=%d lastSeen=%d; want %v %v %d %d",
				i, changed, d.Online, d.StatusChangedAt, d.LastSeen, st.changed, st.wantOnline, st.wantChanged, st.wantSeen)
		}
	}

	// An old report still moves LastSeen forward if it is newer than it.
	must(t, s.Touch(ctx, id, now+400))
	_, err := s.SetStatus(ctx, "dev-000", false, now+250)
	must(t, err)
	if d := mustDevice(t, s, id); d.LastSeen != now+400 || !d.Online {
		t.Fatalf("lastSeen=%d online=%v, want %d true", d.LastSeen, d.Online, now+400)
	}

	_, err = s.SetStatus(ctx, "nope", true, now)
	wantErr(t, err, store.ErrNotFound)
}

func testTouch(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 2, nil)
	must(t, s.Touch(ctx, "dev-000", now+500))
	must(t, s.Touch(ctx, "dev-000", now+200)) // older: no error, no change
	must(t, s.Touch(ctx, "dev-000", now+500)) // same: no error
	if d := mustDevice(t, s, "dev-000"); d.LastSeen != now+500 {
		t.Fatalf("lastSeen = %d, want %d", d.LastSeen, now+500)
	}
	if d := mustDevice(t, s, "dev-001"); d.LastSeen != now {
		t.Fatalf("other device touched: lastSeen = %d", d.LastSeen)
	}
	wantErr(t, s.Touch(ctx, "nope", now), store.ErrNotFound)
	_, err := s.Decommission(ctx, "dev-001", now+1)
	must(t, err)
	wantErr(t, s.Touch(ctx, "dev-001", now+600), store.ErrNotFound)
}

func testRecordBirth(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 1, nil)
	const id = "dev-000"
	must(t, s.RecordBirth(ctx, id, []byte("facts-2"), "2.0.0", 2, now+200))
	must(t, s.RecordBirth(ctx, id, []byte("facts-1"), "1.5.0", 1, now+100)) // older: ignored
	d := mustDevice(t, s, id)
	if string(d.Facts) != "facts-2" || d.AgentVersion != "2.0.0" || d.ProtocolVersion != 2 || d.LastSeen != now+200 {
		t.Fatalf("after births: facts=%q agent=%s protocol=%d lastSeen=%d", d.Facts, d.AgentVersion, d.ProtocolVersion, d.LastSeen)
	}
	must(t, s.RecordBirth(ctx, id, nil, "2.1.0", 2, now+300))
	if d := mustDevice(t, s, id); d.Facts != nil || d.AgentVersion != "2.1.0" {
		t.Fatalf("facts=%q agent=%s, want none and 2.1.0", d.Facts, d.AgentVersion)
	}
	wantErr(t, s.RecordBirth(ctx, "nope", nil, "", 0, now), store.ErrNotFound)
}

func testDecommission(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 2, func(int) map[string]string { return map[string]string{"site": "a"} })
	const id = "dev-000"
	_, err := s.SetStatus(ctx, id, true, now+1)
	must(t, err)

	d, err := s.Decommission(ctx, id, now+10)
	must(t, err)
	if d.DecommissionedAt != now+10 || d.Online || d.CredentialHash != nil || d.Active() {
		t.Fatalf("decommissioned device: %+v", d)
	}
	hash, active, err := s.DeviceCredential(ctx, id)
	must(t, err)
	if active || hash != nil {
		t.Fatalf("credential = %x, %v; want none, inactive", hash, active)
	}

	// A second call is idempotent and keeps the first time.
	again, err := s.Decommission(ctx, id, now+20)
	must(t, err)
	if !reflect.DeepEqual(again, d) {
		t.Fatalf("second decommission changed the device:\n got %+v\nwant %+v", again, d)
	}

	// Gone from listings and selectors unless asked for.
	got, err := s.ListDevices(ctx, store.ListOptions{Selector: map[string]string{"site": "a"}})
	must(t, err)
	if len(got) != 1 || got[0].ID != "dev-001" {
		t.Fatalf("listed %v, want [dev-001]", ids(got))
	}

	// Nothing more can change it.
	wantErr(t, s.SetDeviceCredential(ctx, id, Hash("new")), store.ErrNotFound)
	_, err = s.SetLabels(ctx, id, map[string]string{"x": "y"}, nil, now+30)
	wantErr(t, err, store.ErrNotFound)
	_, err = s.SetStatus(ctx, id, true, now+30)
	wantErr(t, err, store.ErrNotFound)
	wantErr(t, s.RecordBirth(ctx, id, nil, "9", 9, now+30), store.ErrNotFound)
	if after := mustDevice(t, s, id); !reflect.DeepEqual(after, d) {
		t.Fatalf("decommissioned device changed:\n got %+v\nwant %+v", after, d)
	}

	_, err = s.Decommission(ctx, "nope", now)
	wantErr(t, err, store.ErrNotFound)
	_, _, err = s.DeviceCredential(ctx, "nope")
	wantErr(t, err, store.ErrNotFound)
}

func testSetDeviceCredential(t *testing.T, s *store.Store) {
	ctx := context.Background()
	Enrol(t, s, 1, nil)
	must(t, s.SetDeviceCredential(ctx, "dev-000", Hash("rotated")))
	hash, active, err := s.DeviceCredential(ctx, "dev-000")
	must(t, err)
	if !active || !reflect.DeepEqual(hash, Hash("rotated")) {
		t.Fatalf("credential = %x, %v; want the rotated one", hash, active)
	}
	wantErr(t, s.SetDeviceCredential(ctx, "dev-000", []byte("short")), store.ErrInvalid)
	wantErr(t, s.SetDeviceCredential(ctx, "nope", Hash("x")), store.ErrNotFound)
}
