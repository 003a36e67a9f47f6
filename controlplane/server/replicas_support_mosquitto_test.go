package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/diag"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/server"
	"github.com/flotilla-edge/flotilla/controlplane/supportbundle"
)

// TestReplicasSupportBundleMosquitto: two replicas share one PostgreSQL
// database and one Mosquitto, whose shared subscription deals the
// device's support-upload chunks to either. An operator asks replica A
// for a real agent's support bundle; replica B, which never saw the
// request, reports it ready and serves it: the agent's bundle, byte for
// byte, its signature the device's.
func TestReplicasSupportBundleMosquitto(t *testing.T) {
	shared := newSharedServices(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", shared.b.Log())
		}
	})
	var taken [2]takenCounts // chunks each replica took, by upload
	start := func(dir string, taken *takenCounts) *server.Server {
		t.Helper()
		cfg := shared.config(t, dir)
		cfg.WaveDelay = 0
		cfg.Logger = slog.New(takenCounter{testLogger(t).Handler(), taken})
		return shared.start(t, cfg)
	}
	dirA := t.TempDir()
	a := start(dirA, &taken[0])
	var archive bytes.Buffer
	if _, err := backup.Create(context.Background(), &archive, dirA, backup.Options{}); err != nil {
		t.Fatal(err)
	}
	dirB := filepath.Join(t.TempDir(), "b")
	if _, err := backup.Restore(bytes.NewReader(archive.Bytes()), dirB, backup.Limits{}); err != nil {
		t.Fatal(err)
	}
	bsrv := start(dirB, &taken[1])

	op := newOperator(t, a, dirA, "")
	dev := startAgent(t, op, "dev-sup")
	// Incompressible log records: a bundle of several 256 KiB chunks.
	ring := logring.New(8000, slog.LevelDebug)
	log := slog.New(ring.Handler(nil))
	for range 6000 {
		r := make([]byte, 128)
		_, _ = rand.Read(r)
		log.Debug("noise", "x", hex.EncodeToString(r))
	}
	ds := diag.NewServer(diag.Config{Agent: dev.a, Logs: ring})
	dev.a.SetRemoteDiag(ds.Remote)
	dev.a.SetSupportBundler(ds.SupportBundle)

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ac, bc := adminClient(t, a, dirA), adminClient(t, bsrv, dirA) // the token is in the shared database
	// The device's answer to a command reaches the replica that asked,
	// whichever replica sent it: commands through both, each answered (with
	// command results on a shared subscription, the broker dealt about half
	// to the replica not waiting, and those commands timed out).
	for i := range 6 {
		c, name := ac, "A"
		if i%2 == 1 {
			c, name = bc, "B"
		}
		if rep, err := c.Command(ctx, "dev-sup", "ping", "20s"); err != nil || !rep.OK {
			t.Fatalf("ping %d through replica %s: %+v, %v", i, name, rep, err)
		}
	}
	// The API's longest wait: under -race on a loaded machine the agent
	// takes 10–20 s to build and sign the bundle before it answers.
	req, err := ac.RequestSupportBundle(ctx, "dev-sup", 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var got supportbundle.Info
	within(t, time.Minute, "the bundle ready on replica B", func() bool {
		got, err = bc.SupportBundle(ctx, "dev-sup", req.ID, 5*time.Second)
		return err == nil && got.State != supportbundle.StateUploading
	})
	if got.State != supportbundle.StateReady || got.Chunks < 3 {
		t.Fatalf("on replica B: %+v", got)
	}
	if a, b := taken[0].of(req.ID), taken[1].of(req.ID); a == 0 || b == 0 || a+b != int64(got.Chunks) {
		t.Fatalf("replica A took %d chunks, B %d, of %d: the broker should deal them to both", a, b, got.Chunks)
	}
	var out bytes.Buffer
	sb, err := bc.DownloadSupportBundle(ctx, "dev-sup", req.ID, &out)
	if err != nil {
		t.Fatal(err)
	}
	if int64(out.Len()) != got.Size {
		t.Fatalf("downloaded %d bytes from replica B, the upload says %d", out.Len(), got.Size)
	}
	sig, err := diag.ParseSignature(sb)
	if err != nil {
		t.Fatal(err)
	}
	key, _, err := diag.DeviceCredentials(context.Background(), dev.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	if v, err := diag.Verify(out.Bytes(), sig, diag.Trust{PublicKey: key.Public().(ed25519.PublicKey)}); err != nil || !v.Trusted {
		t.Fatalf("the bundle replica B serves: %+v, %v", v, err)
	}
	var fromA bytes.Buffer
	if _, err := ac.DownloadSupportBundle(ctx, "dev-sup", req.ID, &fromA); err != nil || !bytes.Equal(fromA.Bytes(), out.Bytes()) {
		t.Fatalf("replica A serves another bundle: %v", err)
	}
}

// takenCounts are the support chunks a replica took, by upload.
type takenCounts struct {
	mu sync.Mutex
	n  map[string]int64
}

func (c *takenCounts) of(upload string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[upload]
}

// takenCounter counts a replica's "support chunk taken" records and
// passes every record on.
type takenCounter struct {
	slog.Handler
	n *takenCounts
}

func (h takenCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "support chunk taken" {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "upload" {
				h.n.mu.Lock()
				if h.n.n == nil {
					h.n.n = map[string]int64{}
				}
				h.n.n[a.Value.String()]++
				h.n.mu.Unlock()
			}
			return true
		})
	}
	return h.Handler.Handle(ctx, r)
}

func (h takenCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return takenCounter{h.Handler.WithAttrs(as), h.n}
}

func (h takenCounter) WithGroup(name string) slog.Handler {
	return takenCounter{h.Handler.WithGroup(name), h.n}
}
