package fetch

import (
	"context"
	"errors"
	"testing"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// The end-to-end tests (wave, repair, cuts, restarts, dedup, stalls) run
// against real brokers in controlplane/delivery; these cover the pieces.

func TestRangesCoalesceConsecutiveChunks(t *testing.T) {
	refs := []chunkstore.ChunkRef{{FileIndex: 0, ChunkIndex: 0}, {FileIndex: 0, ChunkIndex: 1}, {FileIndex: 0, ChunkIndex: 3},
		{FileIndex: 2, ChunkIndex: 4}, {FileIndex: 2, ChunkIndex: 5}, {FileIndex: 3, ChunkIndex: 0}}
	got := Ranges(refs)
	want := [][3]uint32{{0, 0, 2}, {0, 3, 1}, {2, 4, 2}, {3, 0, 1}}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for i, w := range want {
		if g := got[i]; g.GetFileIndex() != w[0] || g.GetFirst() != w[1] || g.GetCount() != w[2] {
			t.Fatalf("range %d: got %v, want %v", i, g, w)
		}
	}
	req := &pb.ChunkRequest{DeviceId: "d", BundleDigest: "00", Ranges: got}
	if len(req.GetRanges()) != 4 {
		t.Fatal("lost ranges")
	}
}

func TestFetchRefusesBadOptions(t *testing.T) {
	for name, o := range map[string]Options{
		"no device":  {Digest: "ab"},
		"bad digest": {DeviceID: "dev-1", Digest: "not-hex"},
		"bad device": {DeviceID: "Dev/1", Digest: "ab"},
	} {
		err := Fetch(context.Background(), nil, nil, &pb.BundleManifest{}, o)
		if err == nil || errors.Is(err, ErrIncomplete) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestWaitBacksOffToTheCap(t *testing.T) {
	f := &fetch{o: Options{Quiet: 1, MaxBackoff: 5}}
	for attempt, want := range []int64{1, 2, 4, 5, 5} {
		if got := f.wait(true, attempt); int64(got) != want {
			t.Errorf("attempt %d: %d, want %d", attempt, got, want)
		}
	}
	if f.wait(false, 3) != 1 {
		t.Error("listening to the wave waits Quiet")
	}
}
