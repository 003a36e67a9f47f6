package supportbundle_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"google.golang.org/protobuf/proto"
)

// replica is one control-plane replica's service over a shared store,
// with the acks it sent.
type replica struct {
	svc  *supportbundle.Service
	acks *acks
}

func replicas(t *testing.T, st *store.Store, key ed25519.PrivateKey, n int) []*replica {
	t.Helper()
	var out []*replica
	for range n {
		a := &acks{}
		svc, err := supportbundle.New(supportbundle.Config{Store: st, Scheme: topic.Default(), Publisher: a, MaxSize: 1 << 20,
			Poll: 20 * time.Millisecond,
			DeviceKey: func(context.Context, string) (ed25519.PublicKey, error) {
				return key.Public().(ed25519.PublicKey), nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, &replica{svc: svc, acks: a})
	}
	return out
}

// deliver hands c to r as the broker would and waits for r's ack; it
// returns the ack, or nil if r sent none.
func (r *replica) deliver(t *testing.T, c *pb.SupportChunk) *pb.SupportAck {
	t.Helper()
	b, err := wire.Encode(c)
	if err != nil {
		t.Fatal(err)
	}
	before := r.acks.count()
	r.svc.Handle(context.Background(), topic.Default().Device(topic.SupportUpload, c.GetDeviceId()), b)
	r.svc.Close()
	r.acks.mu.Lock()
	defer r.acks.mu.Unlock()
	if len(r.acks.got) == before {
		return nil
	}
	return r.acks.got[len(r.acks.got)-1]
}

func readAll(t *testing.T, r *replica, dev, id string) []byte {
	t.Helper()
	f, _, _, err := r.svc.Open(dev, id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplicasShareAnUpload: two replicas over one database, dealt an
// upload's chunks alternately (as a shared subscription deals them),
// take every chunk in order; hostile chunks either replica gets change
// nothing; the bundle is verified once complete and is served, byte for
// byte, by both; a Wait on the replica that did not finish it sees it
// ready.
func TestReplicasShareAnUpload(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		st := be.open(t)
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		rs := replicas(t, st, key, 2)
		in, err := rs[0].svc.Expect("dev-a", "op")
		if err != nil {
			t.Fatal(err)
		}
		bundle := random(5*4096 + 100)
		cs := chunks("dev-a", in.ID, bundle, 4096, key)
		waited := make(chan supportbundle.Info, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			got, _ := rs[0].svc.Wait(ctx, "dev-a", in.ID)
			waited <- got
		}()
		for i, c := range cs {
			r, other := rs[i%2], rs[(i+1)%2]
			if i > 0 {
				// Hostile or stray deliveries to the other replica first.
				bad := proto.Clone(c).(*pb.SupportChunk)
				bad.Data[0] ^= 1
				if a := other.deliver(t, bad); a.GetNext() != uint32(i) || a.GetError() != "" {
					t.Fatalf("chunk %d with a bad digest: %v", i, a)
				}
				if a := other.deliver(t, cs[i-1]); a.GetNext() != uint32(i) || a.GetDone() {
					t.Fatalf("chunk %d again: %v", i-1, a)
				}
				if got, _ := other.svc.Get("dev-a", in.ID); got.Next != uint32(i) || got.Received != int64(i)*4096 || got.State != supportbundle.StateUploading {
					t.Fatalf("after hostile chunks: %+v", got)
				}
			}
			a := r.deliver(t, c)
			if i < len(cs)-1 && (a.GetNext() != uint32(i+1) || a.GetDone() || a.GetError() != "") {
				t.Fatalf("ack of chunk %d: %v", i, a)
			}
			if i == len(cs)-1 && (!a.GetDone() || a.GetError() != "") {
				t.Fatalf("ack of the last chunk: %v", a)
			}
		}
		select {
		case got := <-waited:
			if got.State != supportbundle.StateReady {
				t.Fatalf("Wait on the other replica: %+v", got)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Wait on the other replica never returned")
		}
		for i, r := range rs {
			got, err := r.svc.Get("dev-a", in.ID)
			if err != nil || got.State != supportbundle.StateReady || got.Received != int64(len(bundle)) {
				t.Fatalf("replica %d: %+v %v", i, got, err)
			}
			if !bytes.Equal(readAll(t, r, "dev-a", in.ID), bundle) {
				t.Fatalf("replica %d serves another bundle", i)
			}
		}
		// The last chunk resent to either: done again.
		for i, r := range rs {
			if a := r.deliver(t, cs[len(cs)-1]); !a.GetDone() {
				t.Fatalf("replica %d, the last chunk again: %v", i, a)
			}
		}
	})
}

// TestReplicasDuplicateDelivery: every chunk delivered to both replicas
// at the same moment (a redelivery racing the first delivery) is taken
// once: both answer, neither fails on the other's insert, the upload
// advances by one, and the bundle, verified by whichever finished it, is
// the device's.
func TestReplicasDuplicateDelivery(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		st := be.open(t)
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		rs := replicas(t, st, key, 2)
		in, err := rs[1].svc.Expect("dev-a", "op")
		if err != nil {
			t.Fatal(err)
		}
		bundle := random(24*1024 + 7)
		cs := chunks("dev-a", in.ID, bundle, 1024, key)
		for i, c := range cs {
			var wg sync.WaitGroup
			start := make(chan struct{})
			got := make([]*pb.SupportAck, 2)
			for j, r := range rs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					got[j] = r.deliver(t, c)
				}()
			}
			close(start)
			wg.Wait()
			for j, a := range got {
				last := i == len(cs)-1
				if a == nil || a.GetError() != "" || (!last && a.GetNext() != uint32(i+1)) || (last && !a.GetDone()) {
					t.Fatalf("chunk %d, replica %d: ack %v", i, j, a)
				}
			}
			info, err := rs[0].svc.Get("dev-a", in.ID)
			if err != nil || info.Next != uint32(i+1) {
				t.Fatalf("after chunk %d: %+v %v", i, info, err)
			}
		}
		if !bytes.Equal(readAll(t, rs[0], "dev-a", in.ID), bundle) || !bytes.Equal(readAll(t, rs[1], "dev-a", in.ID), bundle) {
			t.Fatal("the bundle served is not the device's")
		}
		for i := range uint32(len(cs)) {
			b, err := st.SupportChunk(context.Background(), "dev-a", in.ID, i)
			if err != nil || !bytes.Equal(b, cs[i].GetData()) {
				t.Fatalf("stored chunk %d: %v", i, err)
			}
		}
		if _, err := st.SupportChunk(context.Background(), "dev-a", in.ID, uint32(len(cs))); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("a chunk past the last: %v", err)
		}
	})
}

// TestVerifiedAfterACrash: a replica stored an upload's last chunk and
// stopped before recording the verdict (the upload complete, still
// uploading); the device, unanswered, resends the last chunk to another
// replica, which verifies the bundle from the stored chunks and answers
// done.
func TestVerifiedAfterACrash(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		st := be.open(t)
		_, key, _ := ed25519.GenerateKey(rand.Reader)
		r := replicas(t, st, key, 1)[0]
		in, err := r.svc.Expect("dev-a", "op")
		if err != nil {
			t.Fatal(err)
		}
		bundle := random(3*1000 + 1)
		cs := chunks("dev-a", in.ID, bundle, 1000, key)
		for _, c := range cs[:len(cs)-1] {
			r.deliver(t, c)
		}
		last := cs[len(cs)-1]
		// What the crashed replica's transaction left.
		if _, err := st.UpdateSupportUpload(context.Background(), "dev-a", in.ID, func(u *store.SupportUpload) (store.SupportEdit, error) {
			u.Next, u.Received, u.Signature = u.Chunks, u.Size, last.GetSignature()
			return store.SupportEdit{Save: true, Chunk: last.GetData(), Index: last.GetIndex()}, nil
		}); err != nil {
			t.Fatal(err)
		}
		if got, _ := r.svc.Get("dev-a", in.ID); got.State != supportbundle.StateUploading {
			t.Fatalf("before the resend: %+v", got)
		}
		if a := r.deliver(t, last); !a.GetDone() || a.GetError() != "" {
			t.Fatalf("the last chunk resent: %v", a)
		}
		if !bytes.Equal(readAll(t, r, "dev-a", in.ID), bundle) {
			t.Fatal("the bundle is not the device's")
		}
	})
}
