package state

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestOpenMemoryHoldsNoFile: the sim's in-memory state runs the same
// migrations and queries as a file, writes nothing in the data folder and
// holds no file open, and two databases are separate.
func TestOpenMemoryHoldsNoFile(t *testing.T) {
	ctx := context.Background()
	fdsBefore := openFiles(t)
	const n = 20
	dbs := make([]*DB, n)
	dirs := make([]string, n)
	for i := range n {
		dirs[i] = t.TempDir()
		db, err := OpenMemory(ctx, dirs[i])
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		dbs[i] = db
	}
	if got := openFiles(t) - fdsBefore; got >= n {
		t.Errorf("%d in-memory databases hold %d more open files", n, got)
	}
	if err := dbs[0].SaveIdentity(ctx, Identity{DeviceID: "dev-0", MQTTURL: "mqtts://h:8883", TopicPrefix: "flotilla/v1"}); err != nil {
		t.Fatal(err)
	}
	if got, err := dbs[0].Identity(ctx); err != nil || got.DeviceID != "dev-0" {
		t.Errorf("Identity = %+v, %v", got, err)
	}
	if _, err := dbs[1].Identity(ctx); !errors.Is(err, ErrNotEnrolled) {
		t.Errorf("the second database has the first one's identity: %v", err)
	}
	if dbs[0].Epoch() == "" || dbs[0].Epoch() == dbs[1].Epoch() {
		t.Errorf("epochs %q and %q: want two different ones", dbs[0].Epoch(), dbs[1].Epoch())
	}
	if ents, _ := os.ReadDir(dirs[0]); len(ents) != 0 {
		t.Errorf("the data folder has %d entries, want none", len(ents))
	}
}

func openFiles(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
