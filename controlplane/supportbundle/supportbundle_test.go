package supportbundle_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/supportsig"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
	"google.golang.org/protobuf/proto"
)

// acks collects what the service publishes (its acknowledgements), the
// way a device would receive them.
type acks struct {
	mu  sync.Mutex
	got []*pb.SupportAck
	to  []string
}

func (a *acks) Publish(_ context.Context, name string, _ byte, _ bool, payload []byte) error {
	var m pb.SupportAck
	if err := wire.DecodeTopic(topic.SupportAck, payload, &m); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got, a.to = append(a.got, &m), append(a.to, name)
	return nil
}

func (a *acks) last(t *testing.T, svc *supportbundle.Service) *pb.SupportAck {
	t.Helper()
	svc.Close() // acks go out apart from Handle; wait for them
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.got) == 0 {
		t.Fatal("no ack")
	}
	return a.got[len(a.got)-1]
}

func (a *acks) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.got)
}

// backend opens a fresh, empty store for a test.
type backend struct {
	name string
	open func(t testing.TB) *store.Store
}

// backends are the stores the service runs on: SQLite (one replica) and
// PostgreSQL (pgtest: a database of the test's own).
var backends = []backend{
	{"sqlite", func(t testing.TB) *store.Store {
		st, err := store.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "flotilla.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
	{"postgres", func(t testing.TB) *store.Store {
		st, err := store.OpenPostgres(context.Background(), pgtest.Database(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}},
}

// eachBackend runs fn as a subtest per backend.
func eachBackend(t *testing.T, fn func(t *testing.T, b backend)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b) })
	}
}

type fixture struct {
	t    *testing.T
	st   *store.Store
	dir  string // an earlier release's support folder, imported at open
	key  ed25519.PrivateKey
	acks *acks
	svc  *supportbundle.Service
	max  int64
}

func newFixture(t *testing.T, b backend) *fixture {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	f := &fixture{t: t, st: b.open(t), dir: filepath.Join(t.TempDir(), "support"), key: key, acks: &acks{}, max: 1 << 20}
	f.open()
	return f
}

func (f *fixture) open() {
	svc, err := supportbundle.New(supportbundle.Config{Store: f.st, Dir: f.dir, Scheme: topic.Default(), Publisher: f.acks, MaxSize: f.max,
		DeviceKey: func(_ context.Context, id string) (ed25519.PublicKey, error) {
			if id != "dev-a" && id != "dev-b" {
				return nil, errors.New("unknown device")
			}
			return f.key.Public().(ed25519.PublicKey), nil
		}})
	if err != nil {
		f.t.Fatal(err)
	}
	f.svc = svc
}

// chunks cuts a bundle as an agent does, signing it with key.
func chunks(dev, upload string, bundle []byte, size int, key ed25519.PrivateKey) []*pb.SupportChunk {
	sum := sha256.Sum256(bundle)
	sig, _ := json.Marshal(supportsig.Sign(bundle, key, dev, nil))
	n := max(1, (len(bundle)+size-1)/size)
	var out []*pb.SupportChunk
	for i := range n {
		data := bundle[i*size : min((i+1)*size, len(bundle))]
		cs := sha256.Sum256(data)
		c := &pb.SupportChunk{UploadId: upload, DeviceId: dev, Index: uint32(i), Count: uint32(n), TotalSize: uint64(len(bundle)),
			Sha256: sum[:], ChunkSha256: cs[:], Data: data}
		if i == n-1 {
			c.Signature = sig
		}
		out = append(out, c)
	}
	return out
}

// send publishes c on dev's upload topic and waits for the ack; it
// reports whether the service took it as its own.
func (f *fixture) send(dev string, c *pb.SupportChunk) bool {
	f.t.Helper()
	b, err := wire.Encode(c)
	if err != nil {
		f.t.Fatal(err)
	}
	took := f.svc.Handle(context.Background(), topic.Default().Device(topic.SupportUpload, dev), b)
	f.svc.Close() // its ack sent before the next chunk's: acks go out apart, in any order
	return took
}

func random(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// chunkStored reports whether the store holds chunk index of an upload.
func (f *fixture) chunkStored(dev, id string, index uint32) bool {
	f.t.Helper()
	_, err := f.st.SupportChunk(context.Background(), dev, id, index)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) state(dev, id string) supportbundle.Info {
	f.t.Helper()
	in, err := f.svc.Get(dev, id)
	if err != nil {
		f.t.Fatal(err)
	}
	return in
}

// TestUploadResumesAcrossRestart: chunks stored before the control plane
// restarts stay stored; the device's next chunk continues the upload, and
// the finished bundle is byte for byte the device's, signature kept.
func TestUploadResumesAcrossRestart(t *testing.T) {
	eachBackend(t, testUploadResumesAcrossRestart)
}

func testUploadResumesAcrossRestart(t *testing.T, be backend) {
	f := newFixture(t, be)
	in, err := f.svc.Expect("dev-a", "operator")
	if err != nil {
		t.Fatal(err)
	}
	bundle := random(10_000)
	cs := chunks("dev-a", in.ID, bundle, 4096, f.key)
	f.send("dev-a", cs[0])
	if a := f.acks.last(t, f.svc); a.GetNext() != 1 || a.GetDone() {
		t.Fatalf("ack after chunk 0: %v", a)
	}
	f.open() // a new process over the same database
	f.send("dev-a", cs[1])
	if a := f.acks.last(t, f.svc); a.GetNext() != 2 {
		t.Fatalf("ack after the restart: %v", a)
	}
	f.send("dev-a", cs[2])
	if a := f.acks.last(t, f.svc); !a.GetDone() || a.GetError() != "" {
		t.Fatalf("last ack: %v", a)
	}
	got := f.state("dev-a", in.ID)
	if got.State != supportbundle.StateReady || got.Size != int64(len(bundle)) || !strings.Contains(got.Verified, "device key") {
		t.Fatalf("info: %+v", got)
	}
	file, _, sig, err := f.svc.Open("dev-a", in.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	b, err := io.ReadAll(file)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != string(bundle) || !strings.Contains(string(sig), supportsig.Format) {
		t.Fatal("the stored bundle or signature is not the device's")
	}
	// A resent last chunk (its ack was lost) is answered done again.
	f.send("dev-a", cs[2])
	if a := f.acks.last(t, f.svc); !a.GetDone() {
		t.Fatalf("ack of a resent last chunk: %v", a)
	}
}

// TestHostileUploads: every kind of bad chunk is refused, and what it
// refuses leaves nothing behind but the upload's own failure record.
func TestHostileUploads(t *testing.T) {
	eachBackend(t, testHostileUploads)
}

func testHostileUploads(t *testing.T, be backend) {
	bundle := random(9000)
	t.Run("wrong chunk hash is asked again, nothing stored", func(t *testing.T) {
		f := newFixture(t, be)
		in, _ := f.svc.Expect("dev-a", "op")
		cs := chunks("dev-a", in.ID, bundle, 4096, f.key)
		bad := proto.Clone(cs[0]).(*pb.SupportChunk)
		bad.Data[0] ^= 1
		f.send("dev-a", bad)
		if a := f.acks.last(t, f.svc); a.GetNext() != 0 || a.GetError() != "" {
			t.Fatalf("ack: %v", a)
		}
		if got := f.state("dev-a", in.ID); got.Received != 0 || got.Next != 0 || got.State != supportbundle.StateUploading {
			t.Fatalf("info: %+v", got)
		}
		if f.chunkStored("dev-a", in.ID, 0) {
			t.Fatal("a refused chunk was stored")
		}
	})
	t.Run("oversized bundle fails the upload", func(t *testing.T) {
		f := newFixture(t, be)
		f.max = 8000
		f.open()
		in, _ := f.svc.Expect("dev-a", "op")
		f.send("dev-a", chunks("dev-a", in.ID, bundle, 4096, f.key)[0])
		if a := f.acks.last(t, f.svc); !strings.Contains(a.GetError(), "over the limit") {
			t.Fatalf("ack: %v", a)
		}
		if got := f.state("dev-a", in.ID); got.State != supportbundle.StateFailed {
			t.Fatalf("info: %+v", got)
		}
	})
	t.Run("out of order is answered with the next expected", func(t *testing.T) {
		f := newFixture(t, be)
		in, _ := f.svc.Expect("dev-a", "op")
		cs := chunks("dev-a", in.ID, bundle, 4096, f.key)
		f.send("dev-a", cs[0])
		f.send("dev-a", cs[2])
		if a := f.acks.last(t, f.svc); a.GetNext() != 1 || a.GetError() != "" {
			t.Fatalf("ack: %v", a)
		}
		if got := f.state("dev-a", in.ID); got.Next != 1 || got.Received != 4096 {
			t.Fatalf("info: %+v", got)
		}
	})
	t.Run("another device's ID", func(t *testing.T) {
		f := newFixture(t, be)
		in, _ := f.svc.Expect("dev-a", "op")
		c := chunks("dev-a", in.ID, bundle, 4096, f.key)[0]
		// Claiming dev-a on dev-b's topic: dropped, no ack at all.
		if !f.send("dev-b", c) {
			t.Fatal("a support chunk was not taken as one")
		}
		f.svc.Close()
		if n := f.acks.count(); n != 0 {
			t.Fatalf("%d acks to a chunk naming another device", n)
		}
		// dev-b sending its own chunk for dev-a's upload: no such upload.
		f.send("dev-b", chunks("dev-b", in.ID, bundle, 4096, f.key)[0])
		if a := f.acks.last(t, f.svc); a.GetError() == "" || f.acks.to[0] != topic.Default().Device(topic.SupportAck, "dev-b") {
			t.Fatalf("ack: %v to %v", a, f.acks.to)
		}
		if got := f.state("dev-a", in.ID); got.Next != 0 || got.State != supportbundle.StateUploading {
			t.Fatalf("dev-a's upload changed: %+v", got)
		}
		// And the broker never lets dev-b publish on dev-a's topic.
		if topic.Default().DeviceMayPublish("dev-b", topic.Default().Device(topic.SupportUpload, "dev-a")) {
			t.Fatal("the ACL lets a device publish another's support upload")
		}
	})
	t.Run("a chunk disagreeing with the first fails the upload", func(t *testing.T) {
		f := newFixture(t, be)
		in, _ := f.svc.Expect("dev-a", "op")
		cs := chunks("dev-a", in.ID, bundle, 4096, f.key)
		f.send("dev-a", cs[0])
		other := chunks("dev-a", in.ID, random(9000), 4096, f.key)[1]
		f.send("dev-a", other)
		if a := f.acks.last(t, f.svc); a.GetError() == "" {
			t.Fatalf("ack: %v", a)
		}
		got := f.state("dev-a", in.ID)
		if got.State != supportbundle.StateFailed {
			t.Fatalf("info: %+v", got)
		}
		if f.chunkStored("dev-a", in.ID, 0) {
			t.Fatal("a failed upload left its chunks")
		}
	})
	t.Run("signed by another key", func(t *testing.T) {
		f := newFixture(t, be)
		in, _ := f.svc.Expect("dev-a", "op")
		_, other, _ := ed25519.GenerateKey(rand.Reader)
		for _, c := range chunks("dev-a", in.ID, bundle, 4096, other) {
			f.send("dev-a", c)
		}
		if a := f.acks.last(t, f.svc); !strings.Contains(a.GetError(), "not trusted") {
			t.Fatalf("ack: %v", a)
		}
		if _, _, _, err := f.svc.Open("dev-a", in.ID); !errors.Is(err, supportbundle.ErrNotReady) {
			t.Fatalf("open a refused bundle: %v", err)
		}
		if f.chunkStored("dev-a", in.ID, 0) || f.chunkStored("dev-a", in.ID, 2) {
			t.Fatal("a refused bundle was kept")
		}
	})
	t.Run("malformed and unasked", func(t *testing.T) {
		f := newFixture(t, be)
		name := topic.Default().Device(topic.SupportUpload, "dev-a")
		if !f.svc.Handle(context.Background(), name, []byte("\xff\xff garbage")) {
			t.Fatal("garbage on the upload topic not taken")
		}
		f.send("dev-a", chunks("dev-a", "nobody-asked", bundle, 4096, f.key)[0])
		if a := f.acks.last(t, f.svc); !strings.Contains(a.GetError(), "no such upload") {
			t.Fatalf("ack: %v", a)
		}
		if f.svc.Handle(context.Background(), topic.Default().Device(topic.Heartbeat, "dev-a"), nil) {
			t.Fatal("took another topic's message")
		}
	})
	t.Run("path-hostile names", func(t *testing.T) {
		f := newFixture(t, be)
		for _, id := range []string{"../../etc", "..", "a/b", ""} {
			if _, err := f.svc.Get("dev-a", id); !errors.Is(err, supportbundle.ErrNotFound) {
				t.Errorf("Get(%q): %v", id, err)
			}
			if _, err := f.svc.List(id); err == nil && id != "" {
				t.Errorf("List(%q) accepted", id)
			}
		}
		if _, err := f.svc.Expect("../x", "op"); !errors.Is(err, supportbundle.ErrInvalid) {
			t.Errorf("Expect: %v", err)
		}
	})
}

// TestExpireAndKeep: an idle upload is failed; only the newest bundles
// of a device are kept.
func TestExpireAndKeep(t *testing.T) {
	eachBackend(t, testExpireAndKeep)
}

func testExpireAndKeep(t *testing.T, be backend) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	a := &acks{}
	svc, err := supportbundle.New(supportbundle.Config{Store: be.open(t), Scheme: topic.Default(), Publisher: a, Keep: 2, Idle: time.Hour,
		Now:       func() time.Time { return now },
		DeviceKey: func(context.Context, string) (ed25519.PublicKey, error) { return key.Public().(ed25519.PublicKey), nil }})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		now = now.Add(time.Minute)
		in, _ := svc.Expect("dev-a", "op")
		for _, c := range chunks("dev-a", in.ID, random(100), 4096, key) {
			b, _ := wire.Encode(c)
			svc.Handle(context.Background(), topic.Default().Device(topic.SupportUpload, "dev-a"), b)
		}
		ids = append(ids, in.ID)
	}
	idle, _ := svc.Expect("dev-a", "op")
	now = now.Add(2 * time.Hour)
	if n := svc.Expire(); n != 1 {
		t.Fatalf("expired %d, want 1", n)
	}
	list, _ := svc.List("dev-a")
	var ready []string
	for _, in := range list {
		if in.State == supportbundle.StateReady {
			ready = append(ready, in.ID)
		}
		if in.ID == idle.ID && in.State != supportbundle.StateFailed {
			t.Errorf("idle upload: %+v", in)
		}
	}
	if len(ready) != 2 || ready[0] != ids[2] || ready[1] != ids[1] {
		t.Fatalf("kept %v of %v", ready, ids)
	}
	svc.Close()
}

// TestImportEarlierFolder: the folder an earlier release kept uploads in
// is imported once: a ready bundle is served as it was, with its
// signature; an unfinished upload continues from the chunks it had
// taken; a failed one keeps its record; an upload whose files disagree
// with its record is left out; the folder is renamed, not deleted.
func TestImportEarlierFolder(t *testing.T) {
	eachBackend(t, func(t *testing.T, be backend) {
		f := newFixture(t, be)
		at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
		write := func(name string, b []byte) {
			t.Helper()
			if err := os.MkdirAll(filepath.Join(f.dir, "dev-a"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(f.dir, "dev-a", name), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		record := func(in supportbundle.Info) {
			b, _ := json.Marshal(in)
			write(in.ID+".json", b)
		}
		ready, part := random(10_000), random(9_000)
		rsum, psum := sha256.Sum256(ready), sha256.Sum256(part)
		sig, _ := json.MarshalIndent(supportsig.Sign(ready, f.key, "dev-a", nil), "", "  ")
		record(supportbundle.Info{ID: "r1", DeviceID: "dev-a", State: supportbundle.StateReady, RequestedAt: at, UpdatedAt: at,
			Size: 10_000, Received: 10_000, SHA256: hex.EncodeToString(rsum[:]), Chunks: 3, Next: 3, ChunkSize: 4096, Verified: "signed by the given device key"})
		write("r1.tar.gz", ready)
		write("r1.tar.gz.sig", sig)
		record(supportbundle.Info{ID: "p1", DeviceID: "dev-a", State: supportbundle.StateUploading, RequestedAt: at.Add(time.Minute), UpdatedAt: at,
			Size: 9_000, Received: 8192, SHA256: hex.EncodeToString(psum[:]), Chunks: 3, Next: 2, ChunkSize: 4096})
		write("p1.part", part[:8192])
		record(supportbundle.Info{ID: "f1", DeviceID: "dev-a", State: supportbundle.StateFailed, Error: "the device refused", RequestedAt: at.Add(2 * time.Minute), UpdatedAt: at})
		record(supportbundle.Info{ID: "b1", DeviceID: "dev-a", State: supportbundle.StateReady, RequestedAt: at.Add(3 * time.Minute), UpdatedAt: at,
			Size: 10_000, Chunks: 3, Next: 3, ChunkSize: 4096}) // its bundle is missing
		write("x1.json", []byte("{not json"))

		f.open()
		list, err := f.svc.List("dev-a")
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, in := range list {
			got = append(got, in.ID+":"+in.State)
		}
		if strings.Join(got, " ") != "f1:failed p1:uploading r1:ready" {
			t.Fatalf("imported: %v", got)
		}
		r, in, s, err := f.svc.Open("dev-a", "r1")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(b, ready) || !bytes.Equal(s, sig) || in.Verified == "" || !in.RequestedAt.Equal(at) {
			t.Fatalf("imported bundle: %v, %+v", err, in)
		}
		if _, err := os.Stat(f.dir); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the folder stays: %v", err)
		}
		if _, err := os.Stat(filepath.Join(f.dir+".imported", "dev-a", "r1.tar.gz")); err != nil {
			t.Fatalf("the imported folder is not kept: %v", err)
		}
		// The unfinished upload continues with its third chunk.
		cs := chunks("dev-a", "p1", part, 4096, f.key)
		f.send("dev-a", cs[2])
		if a := f.acks.last(t, f.svc); !a.GetDone() || a.GetError() != "" {
			t.Fatalf("the imported upload's last chunk: %v", a)
		}
		r, _, _, err = f.svc.Open("dev-a", "p1")
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(r)
		if !bytes.Equal(b, part) {
			t.Fatal("the resumed bundle is not the device's")
		}
		f.open() // again: nothing left to import, nothing changes
		if list2, _ := f.svc.List("dev-a"); len(list2) != 3 {
			t.Fatalf("after a second start: %+v", list2)
		}
	})
}
