package storetest

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

func testAudit(t *testing.T, s *store.Store) {
	ctx := context.Background()
	var appended []store.AuditEntry
	for i := range 7 {
		e := store.AuditEntry{At: now + int64(i%3), Actor: "alice", Action: "device.label", Target: fmt.Sprintf("dev-%d", i), Detail: `{"a":"b"}`}
		id, err := s.AppendAudit(ctx, e)
		must(t, err)
		if len(appended) > 0 && id <= appended[len(appended)-1].ID {
			t.Fatalf("id %d after %d: ids must increase", id, appended[len(appended)-1].ID)
		}
		e.ID = id
		appended = append(appended, e)
	}
	_, err := s.AppendAudit(ctx, store.AuditEntry{At: now, Actor: "alice"})
	wantErr(t, err, store.ErrInvalid)

	newestFirst := make([]store.AuditEntry, len(appended))
	for i, e := range appended {
		newestFirst[len(appended)-1-i] = e
	}
	all, err := s.ListAudit(ctx, 0, 0)
	must(t, err)
	if !reflect.DeepEqual(all, newestFirst) {
		t.Fatalf("audit\n got %+v\nwant %+v", all, newestFirst)
	}

	var paged []store.AuditEntry
	var before int64
	for {
		page, err := s.ListAudit(ctx, 3, before)
		must(t, err)
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		before = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(paged, newestFirst) {
		t.Fatalf("paged audit\n got %+v\nwant %+v", paged, newestFirst)
	}
}
