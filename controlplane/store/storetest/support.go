package storetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// testSupportUploads: an upload is created once; an update's edit lands
// whole or not at all (a chunk stored twice rolls back the state saved
// with it); out-of-range fields and names are refused; an import stores
// every chunk or none; pruning keeps the newest finished uploads, never an
// unfinished one, and takes their chunks with them.
func testSupportUploads(t *testing.T, s *store.Store) {
	ctx := context.Background()
	up := func(id string, at int64, state string) store.SupportUpload {
		return store.SupportUpload{DeviceID: "dev-a", ID: id, State: state, RequestedAt: at, UpdatedAt: at}
	}
	must(t, s.CreateSupportUpload(ctx, up("u1", now, "uploading")))
	wantErr(t, s.CreateSupportUpload(ctx, up("u1", now, "uploading")), store.ErrConflict)
	for _, bad := range []store.SupportUpload{up("../x", now, "uploading"), up("", now, "uploading"), up("u9", now, ""),
		{DeviceID: "dev/a", ID: "u9", State: "uploading"}, {DeviceID: "dev-a", ID: "u9", State: "uploading", Size: -1},
		{DeviceID: "dev-a", ID: "u9", State: "uploading", Error: strings.Repeat("x", 5000)}} {
		wantErr(t, s.CreateSupportUpload(ctx, bad), store.ErrInvalid)
	}
	if _, err := s.SupportUpload(ctx, "dev-a", "u9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused upload: %v", err)
	}
	take := func(index uint32, data []byte) error {
		_, err := s.UpdateSupportUpload(ctx, "dev-a", "u1", func(u *store.SupportUpload) (store.SupportEdit, error) {
			u.Chunks, u.Next, u.Received = 3, u.Next+1, u.Received+int64(len(data))
			return store.SupportEdit{Save: true, Chunk: data, Index: index}, nil
		})
		return err
	}
	must(t, take(0, []byte("abc")))
	wantErr(t, take(0, []byte("abc")), store.ErrConflict)
	wantErr(t, take(1, make([]byte, store.MaxSupportChunkBytes+1)), store.ErrInvalid)
	if u, err := s.SupportUpload(ctx, "dev-a", "u1"); err != nil || u.Next != 1 || u.Received != 3 {
		t.Fatalf("after refused chunks: %+v %v", u, err)
	}
	if b, err := s.SupportChunk(ctx, "dev-a", "u1", 0); err != nil || string(b) != "abc" {
		t.Fatalf("chunk 0: %q %v", b, err)
	}
	wantErr(t, func() error { _, err := s.SupportChunk(ctx, "dev-a", "u1", 1); return err }(), store.ErrNotFound)
	wantErr(t, func() error {
		_, err := s.UpdateSupportUpload(ctx, "dev-a", "nope", func(*store.SupportUpload) (store.SupportEdit, error) { return store.SupportEdit{}, nil })
		return err
	}(), store.ErrNotFound)
	// An error from the callback changes nothing.
	boom := errors.New("boom")
	if _, err := s.UpdateSupportUpload(ctx, "dev-a", "u1", func(u *store.SupportUpload) (store.SupportEdit, error) {
		u.State = "failed"
		return store.SupportEdit{Save: true, DropChunks: true}, boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if u, _ := s.SupportUpload(ctx, "dev-a", "u1"); u.State != "uploading" {
		t.Fatalf("a callback's error saved: %+v", u)
	}

	// An import whose chunks fail part way stores nothing.
	n := 0
	wantErr(t, s.ImportSupportUpload(ctx, up("u2", now+1, "ready"), func() ([]byte, error) {
		if n++; n == 3 {
			return make([]byte, store.MaxSupportChunkBytes+1), nil
		}
		return []byte("x"), nil
	}), store.ErrInvalid)
	if _, err := s.SupportUpload(ctx, "dev-a", "u2"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused import left its upload: %v", err)
	}
	for i, id := range []string{"u2", "u3", "u4"} {
		parts := [][]byte{[]byte(id), []byte("-data")}
		must(t, s.ImportSupportUpload(ctx, up(id, now+int64(i)+1, "ready"), func() ([]byte, error) {
			if len(parts) == 0 {
				return nil, io.EOF
			}
			p := parts[0]
			parts = parts[1:]
			return p, nil
		}))
	}
	must(t, s.CreateSupportUpload(ctx, up("u5", now+10, "failed")))
	if got, err := s.PruneSupportUploads(ctx, "dev-a", 2); err != nil || got != 2 {
		t.Fatalf("pruned %d: %v", got, err)
	}
	list, err := s.SupportUploads(ctx, "dev-a")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range list {
		ids = append(ids, u.ID)
	}
	if strings.Join(ids, " ") != "u5 u4 u1" {
		t.Fatalf("after pruning: %v", ids)
	}
	if b, err := s.SupportChunk(ctx, "dev-a", "u4", 1); err != nil || !bytes.Equal(b, []byte("-data")) {
		t.Fatalf("a kept upload's chunk: %q %v", b, err)
	}
	wantErr(t, func() error { _, err := s.SupportChunk(ctx, "dev-a", "u2", 0); return err }(), store.ErrNotFound)
	stale, err := s.StaleSupportUploads(ctx, "uploading", now+1, 0)
	if err != nil || len(stale) != 1 || stale[0].ID != "u1" {
		t.Fatalf("stale: %+v %v", stale, err)
	}
}
