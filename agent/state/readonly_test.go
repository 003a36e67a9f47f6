package state

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestOpenReadOnly reads what a running agent wrote, beside it, and
// cannot write; a missing database is not created.
func TestOpenReadOnly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := OpenReadOnly(ctx, dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing database: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, DBFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("OpenReadOnly created the database")
	}
	w, err := Open(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.SaveIdentity(ctx, Identity{DeviceID: "dev-1", MQTTURL: "tcp://b:1883", MQTTPassword: "pw", TopicPrefix: "flotilla", EnrolledAt: time.UnixMilli(1000)}); err != nil {
		t.Fatal(err)
	}
	if err := w.Record(ctx, Event{At: time.UnixMilli(2000), Level: "warn", Code: "mqtt.lost", Message: "eof"}); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id, err := r.Identity(ctx)
	if err != nil || id.DeviceID != "dev-1" {
		t.Fatalf("identity: %+v, %v", id, err)
	}
	if ev, err := r.Recent(ctx, 10); err != nil || len(ev) != 1 || ev[0].Code != "mqtt.lost" {
		t.Fatalf("journal: %+v, %v", ev, err)
	}
	if r.Epoch() != w.Epoch() {
		t.Errorf("epoch %q, want %q", r.Epoch(), w.Epoch())
	}
	if err := r.Record(ctx, Event{At: time.Now(), Level: "info", Code: "x", Message: "y"}); err == nil {
		t.Error("a write through the read-only state succeeded")
	}
	// A write by the agent after the reader opened is seen.
	if err := w.Record(ctx, Event{At: time.UnixMilli(3000), Level: "info", Code: "later", Message: "z"}); err != nil {
		t.Fatal(err)
	}
	if ev, _ := r.Recent(ctx, 1); len(ev) != 1 || ev[0].Code != "later" {
		t.Errorf("reader did not see the later write: %+v", ev)
	}
}

func TestLoadKeyDoesNotCreate(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadKey(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("LoadKey created a key")
	}
	k, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadKey(dir)
	if err != nil || !got.Equal(k) {
		t.Fatalf("LoadKey: %v", err)
	}
}
