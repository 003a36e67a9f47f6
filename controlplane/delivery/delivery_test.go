package delivery_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/fetch"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

const chunkOverhead = 160 // a Chunk message's envelope around its data, generously

// account sums what one device received over all its Fetch calls.
type account struct {
	mu       sync.Mutex
	received int64
	last     fetch.Progress
}

func (a *account) progress(p fetch.Progress) {
	a.mu.Lock()
	a.last = p
	a.mu.Unlock()
}

// end adds a finished Fetch's received bytes.
func (a *account) end() {
	a.mu.Lock()
	a.received += a.last.BytesReceived
	a.mu.Unlock()
}

func fetchOpts(id, digest string, a *account, hook func(fetch.Progress)) fetch.Options {
	// The product's default quiet time: a shorter one ends listening to
	// the wave while a loaded machine still delivers it, and the device
	// then asks for chunks already on their way (received twice).
	return fetch.Options{DeviceID: id, Digest: digest, Quiet: fetch.DefaultQuiet,
		MaxBackoff: 3 * time.Second, Deadline: time.Minute, MaxRequestBytes: 1 << 20,
		Progress: func(p fetch.Progress) {
			a.progress(p)
			if hook != nil {
				hook(p)
			}
		}}
}

func openChunks(t *testing.T, dir string) *chunkstore.Store {
	t.Helper()
	s, err := chunkstore.Open(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestWaveAndRepair delivers a bundle to a small fleet on each broker: three
// devices listen to the whole wave; one is cut mid-wave and again
// mid-repair; one is stopped mid-wave and restarted with its chunk store
// reopened; one joins after the wave and gets everything by repair. Each
// ends with every chunk, having received again at most one chunk per cut.
func TestWaveAndRepair(t *testing.T) {
	for _, start := range []func(testing.TB, []string) brokerEnv{
		func(t testing.TB, _ []string) brokerEnv { return startEmbedded(t) },
		startMosquitto,
	} {
		ids := deviceIDs(6)
		env := start(t, ids)
		t.Run(env.name, func(t *testing.T) { waveAndRepair(t, env, ids) })
	}
}

func waveAndRepair(t *testing.T, env brokerEnv, ids []string) {
	store := newStore(t)
	digest, m := build(t, store, bundleDir(t, 6, 1))
	cp := startControl(t, env, store, delivery.RepairOptions{})
	total := int64(0)
	for _, r := range chunkstore.Refs(m) {
		total += int64(r.Length)
	}
	ctx := context.Background()

	type result struct {
		id   string
		cuts int
		acct *account
		dir  string
	}
	results := make(chan result, len(ids))
	var listening sync.WaitGroup
	fetchers := sync.WaitGroup{}
	run := func(id string, body func(id, dir string, a *account, ready func()) int) {
		listening.Add(1)
		fetchers.Add(1)
		go func() {
			defer fetchers.Done()
			a, dir := &account{}, t.TempDir()
			cuts := body(id, dir, a, sync.OnceFunc(listening.Done))
			results <- result{id, cuts, a, dir}
		}()
	}
	// fetchOnce runs one Fetch on a fresh connection and store.
	fetchOnce := func(ctx context.Context, id, dir string, a *account, hook func(fetch.Progress)) error {
		d := dial(t, env, id)
		defer d.client.Disconnect(0)
		cs := openChunks(t, dir)
		defer cs.Close()
		err := fetch.Fetch(ctx, d.conn(), cs, m, fetchOpts(id, digest, a, func(p fetch.Progress) {
			if hook != nil {
				hook(p)
			}
			_ = d // hooks may cut this connection
		}))
		a.end()
		return err
	}

	// Three plain listeners.
	for _, id := range ids[:3] {
		run(id, func(id, dir string, a *account, ready func()) int {
			if err := fetchOnce(ctx, id, dir, a, func(p fetch.Progress) {
				if p.Listening {
					ready()
				}
			}); err != nil {
				t.Errorf("%s: %v", id, err)
			}
			return 0
		})
	}
	// Cut mid-wave, then mid-repair.
	run(ids[3], func(id, dir string, a *account, ready func()) int {
		cuts := 0
		for attempt := 0; ; attempt++ {
			d := dial(t, env, id)
			cs := openChunks(t, dir)
			cutAt := -1
			switch attempt {
			case 0:
				cutAt = 5 // chunks into the wave
			case 1:
				cutAt = -2 // after the first repaired chunk
			}
			var once sync.Once
			startHave := -1
			err := fetch.Fetch(ctx, d.conn(), cs, m, fetchOpts(id, digest, a, func(p fetch.Progress) {
				if p.Listening {
					ready()
				}
				if startHave < 0 {
					startHave = p.ChunksHave
				}
				if (cutAt >= 0 && p.ChunksHave >= cutAt) || (cutAt == -2 && p.Requests > 0 && p.ChunksHave > startHave) {
					once.Do(func() { cuts++; d.cut() })
				}
			}))
			a.end()
			cs.Close()
			d.client.Disconnect(0)
			if err == nil {
				return cuts
			}
			if !errors.Is(err, fetch.ErrIncomplete) || attempt > 4 {
				t.Errorf("%s attempt %d: %v", id, attempt, err)
				return cuts
			}
			t.Logf("%s attempt %d: %v", id, attempt, err)
		}
	})
	// Stopped mid-wave (as by a restart), store reopened.
	run(ids[4], func(id, dir string, a *account, ready func()) int {
		sctx, stop := context.WithCancel(ctx)
		err := fetchOnce(sctx, id, dir, a, func(p fetch.Progress) {
			if p.Listening {
				ready()
			}
			if p.ChunksHave >= 8 {
				stop()
			}
		})
		stop()
		if !errors.Is(err, fetch.ErrIncomplete) {
			t.Errorf("%s: stopped fetch: %v", id, err)
		}
		if err := fetchOnce(ctx, id, dir, a, nil); err != nil {
			t.Errorf("%s: after restart: %v", id, err)
		}
		return 1
	})

	listening.Wait()
	st := cp.wave(t, digest, delivery.WaveOptions{})
	t.Logf("wave: %d chunks, %d bytes in %s", st.Chunks, st.Bytes, st.Elapsed)

	// Late joiner: everything by repair.
	run(ids[5], func(id, dir string, a *account, ready func()) int {
		ready()
		if err := fetchOnce(ctx, id, dir, a, nil); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		return 0
	})
	fetchers.Wait()
	close(results)
	for r := range results {
		cs := openChunks(t, r.dir)
		if miss := cs.Missing(m); len(miss) != 0 {
			t.Errorf("%s: %d chunks missing", r.id, len(miss))
		}
		cs.Close()
		limit := total + int64(len(chunkstore.Refs(m)))*chunkOverhead + int64(r.cuts)*(pb.DefaultChunkSize+chunkOverhead)
		t.Logf("%s: received %d bytes for %d (%d cuts)", r.id, r.acct.received, total, r.cuts)
		if r.acct.received > limit {
			t.Errorf("%s: received %d bytes, limit %d for %d cuts", r.id, r.acct.received, limit, r.cuts)
		}
	}
	rs := cp.rep.Stats()
	t.Logf("repair: %d requests, %d chunks, %d bytes, refused %v", rs.Requests, rs.Chunks, rs.Bytes, rs.Refused)
	if len(rs.Refused) != 0 {
		t.Errorf("honest requests refused: %v", rs.Refused)
	}
	// The late joiner may still catch the wave's tail from the broker's
	// queues; the rest came by repair.
	if p := cp.rep.Progress(ids[5]); len(p) != 1 || p[0].Requests == 0 || p[0].BytesServed < total/2 {
		t.Errorf("late joiner's progress: %+v", p)
	}
}
