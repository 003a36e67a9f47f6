package server_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/flotctl"
	"github.com/flotilla-edge/flotilla/controlplane/release"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// releaseSized is operator.release with chunkSize-byte chunks.
func (o operator) releaseSized(src, counter string, chunkSize int) (*bundle.Store, string) {
	o.t.Helper()
	storeDir := src + ".bundle"
	o.run("bundle", "build", src, "-o", storeDir, "-chunk-size", strconv.Itoa(chunkSize))
	s, err := bundle.OpenStore(storeDir)
	if err != nil {
		o.t.Fatal(err)
	}
	digest, err := onlyDigest(storeDir)
	if err != nil {
		o.t.Fatal(err)
	}
	o.run("release", "add", "-keys", o.keys, "-model", "digits", "-counter", counter, "-version", "1."+counter, filepath.Join(storeDir, "manifests", digest))
	o.run("release", "push", "-keys", o.keys)
	o.run("bundle", "push", "-store", storeDir)
	return s, digest
}

func onlyDigest(store string) (string, error) {
	names, err := filepath.Glob(filepath.Join(store, "manifests", "*"))
	if err != nil || len(names) != 1 {
		return "", fmt.Errorf("manifests in %s: %v %v", store, names, err)
	}
	return filepath.Base(names[0]), nil
}

// try runs flotctl and returns its output and exit code.
func (o operator) try(args ...string) (string, int) {
	var out bytes.Buffer
	env := flotctl.Env{Stdout: &out, Stderr: &out, Getenv: func(k string) string {
		switch k {
		case "FLOTILLA_SERVER":
			return o.srv.APIURL()
		case "FLOTILLA_TOKEN":
			return o.token
		case "FLOTILLA_CA_FINGERPRINT":
			return o.srv.CAFingerprint()
		}
		return ""
	}}
	code := flotctl.Run(context.Background(), args, env)
	return out.String(), code
}

// TestBundleFleetLifecycle runs one server (embedded broker) and one agent
// that reaches the broker through a proxy, through what a fleet lives
// through after the first install; the subtests share them and run in
// order, each release counter above the last:
//
//	slow retrieval   release 2 trickles at 300 B/s from its first chunk:
//	                 the fetch's deadline ends it with ErrIncomplete, the
//	                 staged state untouched; the link recovers (one cut)
//	                 and the download resumes and completes
//	restart          release 3: the agent is stopped mid-download and a
//	                 new one started on the same data folder resumes it
//	key rotation     keys rotate (root and targets), release push; the
//	                 agent, enrolled under root v1, stages release 4 signed
//	                 by the new keys; targets signed by the retired keys are
//	                 refused by the server and, published by an attacker on
//	                 the broker, by the device
//	rerelease        bundle rerelease digits 1 → release 5 with release 1's
//	                 content, staged with no chunk fetched; assigning
//	                 release 1 itself is refused as a lower release counter
//
// Every chunk the agent receives is counted: across a cut or a restart it
// receives again at most one chunk per interruption.
func TestBundleFleetLifecycle(t *testing.T) {
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTListen: "127.0.0.1:0", Version: "test",
		WaveDelay: 300 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	op := newOperator(t, srv, dir, keys)

	src1 := digitsSource(t, "1", nil)
	s1, d1 := op.release(src1, "1")
	px := startProxy(t, srv.BrokerAddr().String())
	dev := startNetAgent(t, op, "dev-net", px)
	op.run("devices", "assign", "dev-net", "digits", "1")
	assertStaged(t, dev.fleet(), 1)
	sameFiles(t, s1, d1, src1, dev.fleet().staged(t)["digits"].Dir)

	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow() // the next steps build on this one
		}
	}
	step("slow retrieval", func(t *testing.T) {
		op.t, dev.t = t, t
		before := dev.fleet().staged(t)["digits"]
		src := digitsSource(t, "2", withBlob(t, "extra.bin", 1<<20, 2))
		s, d := op.releaseSized(src, "2", 64<<10)
		total := chunksOf(t, s, d)
		// The link slows to a trickle as the first chunk arrives, or
		// once the metadata, the manifest and a few chunks have passed
		// (256 KiB of a 1 MiB bundle), whichever comes first.
		trickled := make(chan struct{})
		var once sync.Once
		dev.cc.hook(func(digest string) {
			if digest == d {
				px.rate.CompareAndSwap(0, 300)
				once.Do(func() { close(trickled) })
			}
		})
		px.trickleAfter(256<<10, 300)
		defer px.fullSpeed()
		op.run("devices", "assign", "dev-net", "digits", "2")
		select {
		case <-trickled:
		case <-time.After(wait):
			t.Fatal("no chunk of release 2 arrived")
		}
		dev.cc.hook(nil)
		// The fetch started before its first chunk came: its deadline has
		// passed a second after this.
		time.Sleep(fetchDeadline + time.Second)
		if got := dev.fleet().staged(t)["digits"]; got != before {
			t.Fatalf("staged state changed during a failed fetch: %+v, was %+v", got, before)
		}
		sameFiles(t, s1, d1, src1, before.Dir)
		got, _ := dev.cc.received(d)
		if got >= total {
			t.Fatalf("received %d of %d chunks before the trickle tripped the fetch", got, total)
		}
		// The link recovers (one cut); the agent reconnects and resumes.
		px.fullSpeed()
		px.cut()
		// The slow link held back the device's reports too (one TCP
		// stream: the broker's acknowledgements wait behind the trickle),
		// so the failure is read from the agent's log.
		var failure string
		eventually(t, "fetch failure logged", func() bool {
			failure = dev.logs.find("bundle staging will resume", "release=2", "bundle fetch incomplete")
			return failure != ""
		})
		if !strings.Contains(failure, "stalled: nothing new for 3s") && !strings.Contains(failure, "deadline") {
			t.Errorf("fetch error names neither the stall nor the deadline: %s", failure)
		}
		assertStaged(t, dev.fleet(), 2)
		sameFiles(t, s, d, src, dev.fleet().staged(t)["digits"].Dir)
		n, again := dev.cc.received(d)
		t.Logf("release 2: %d of %d chunks before the trickle tripped the fetch; %d received in all, %d again", got, total, n, again)
		if again > 2 { // two interruptions: the trickle and the cut
			t.Errorf("received %d chunks again over 2 interruptions, want at most 2", again)
		}
	})

	step("restart mid-download", func(t *testing.T) {
		op.t, dev.t = t, t
		src := digitsSource(t, "3", withBlob(t, "extra.bin", 128<<10, 3))
		s, d := op.release(src, "3")
		total := chunksOf(t, s, d)
		px.rate.Store(64 << 10) // sixteen 4 KiB chunks a second: time to stop it midway
		defer px.rate.Store(0)
		op.run("devices", "assign", "dev-net", "digits", "3")
		eventually(t, "some chunks of release 3", func() bool { n, _ := dev.cc.received(d); return n >= 6 })
		dev.stop()
		px.rate.Store(0)
		held := dev.heldChunks(t)
		atStop := dev.cc.counts(d)
		if dev.fleet().staged(t)["digits"].Release != 2 || len(atStop) >= total {
			t.Fatalf("stopped after %d of %d chunks with %+v staged", len(atStop), total, dev.fleet().staged(t)["digits"])
		}
		dev.start("") // enrolled already: the same data folder, no token
		assertStaged(t, dev.fleet(), 3)
		sameFiles(t, s, d, src, dev.fleet().staged(t)["digits"].Dir)
		// What the new agent received of what the old one had stored.
		again, lost := 0, 0
		for sum, n := range dev.cc.counts(d) {
			switch {
			case held[sum]:
				again += n - atStop[sum]
			case atStop[sum] > 0:
				lost++ // received by the old agent as it stopped, never stored
			}
		}
		n, _ := dev.cc.received(d)
		t.Logf("release 3: %d chunks; %d received in all; after the restart %d held ones received again; %d received but not stored by the stopping agent",
			total, n, again, lost)
		if again > 1 {
			t.Errorf("received %d stored chunks again after one restart, want at most 1", again)
		}
	})

	step("key rotation", func(t *testing.T) {
		op.t, dev.t = t, t
		op.run("keys", "rotate", "-dir", keys, "-roles", "root,targets")
		op.run("release", "push", "-keys", keys)
		src := digitsSource(t, "4", func(d string) { writeString(t, filepath.Join(d, "labels.txt"), "four\n") })
		s, d := op.release(src, "4")
		op.run("devices", "assign", "dev-net", "digits", "4")
		assertStaged(t, dev.fleet(), 4)
		sameFiles(t, s, d, src, dev.fleet().staged(t)["digits"].Dir)
		staged := dev.fleet().staged(t)["digits"]

		// Targets re-signed by the retired keys, releasing a manifest.
		rogueSrc := digitsSource(t, "5", func(d string) { writeString(t, filepath.Join(d, "labels.txt"), "rogue\n") })
		rogue, _, err := bundle.Build(rogueSrc, bundle.Options{ChunkSize: 4096})
		if err != nil {
			t.Fatal(err)
		}
		repo, err := release.OpenDir(filepath.Join(keys, "repo"))
		if err != nil {
			t.Fatal(err)
		}
		retired, err := release.ReadKeys(filepath.Join(keys, "keys", "retired"), release.RoleTargets)
		if err != nil || len(retired) != 3 {
			t.Fatalf("retired targets keys: %d, %v", len(retired), err)
		}
		path := release.TargetPath("digits", 5)
		repo.Targets = retiredTargets(t, repo, path, rogue, retired)

		// The server refuses it.
		pushDir := filepath.Join(t.TempDir(), "stolen")
		if err := repo.WriteDir(filepath.Join(pushDir, "repo")); err != nil {
			t.Fatal(err)
		}
		if out, code := op.try("release", "push", "-keys", pushDir); code == 0 || !strings.Contains(out, "does not verify") {
			t.Fatalf("server took targets signed by retired keys: exit %d: %s", code, out)
		}
		// Published on the broker by an attacker (with the online key and a
		// director naming it), the device refuses it too.
		srvRepo, err := release.OpenDir(filepath.Join(dir, "release", "repo"))
		if err != nil {
			t.Fatal(err)
		}
		repo.Snapshot, repo.Timestamp = srvRepo.Snapshot, srvRepo.Timestamp
		onlineSign(t, repo, keys)
		rctx, rcancel := context.WithTimeout(context.Background(), wait)
		defer rcancel()
		if err := srv.RogueRelease(rctx, repo.Metadata()); err != nil {
			t.Fatal(err)
		}
		if err := srv.RogueDirector(rctx, "dev-net", path, rogue); err != nil {
			t.Fatal(err)
		}
		eventually(t, "refusal of the retired keys reported", func() bool {
			m := reported(srv, "dev-net")
			return m != nil && (strings.Contains(m.GetLastError(), "signature by a key the root does not name") ||
				strings.Contains(m.GetLastError(), "signatures below threshold"))
		})
		if got := dev.fleet().staged(t)["digits"]; got != staged {
			t.Fatalf("staged %+v after the refusal, was %+v", got, staged)
		}
		op.run("release", "push", "-keys", keys) // the real metadata again
	})

	step("rerelease", func(t *testing.T) {
		op.t, dev.t = t, t
		out := op.run("-json", "bundle", "rerelease", "digits", "1", "-keys", keys, "-store", src1+".bundle")
		var rr struct {
			Release uint64 `json:"release"`
			Digest  string `json:"digest"`
		}
		if err := json.Unmarshal([]byte(out), &rr); err != nil || rr.Release != 5 {
			t.Fatalf("rerelease: %v: %s", err, out)
		}
		op.run("release", "push", "-keys", keys)
		op.run("bundle", "push", "-store", src1+".bundle", rr.Digest)
		before := dev.fleet().chunks(t)
		op.run("devices", "assign", "dev-net", "digits", "5")
		assertStaged(t, dev.fleet(), 5)
		st := dev.fleet().staged(t)["digits"]
		if st.Digest != rr.Digest {
			t.Fatalf("staged %s, want the re-released manifest %s", st.Digest, rr.Digest)
		}
		sameFiles(t, s1, d1, src1, st.Dir)
		// Every chunk is release 1's: the device fetches only those its
		// store no longer holds (it collects chunks no slot needs).
		_, m1, err := s1.Manifest(d1)
		if err != nil {
			t.Fatal(err)
		}
		lacking := map[string]bool{}
		for _, f := range m1.GetFiles() {
			for _, c := range f.GetChunks() {
				if h := hex.EncodeToString(c.GetSha256()); !before[h] {
					lacking[h] = true
				}
			}
		}
		if n, _ := dev.cc.received(rr.Digest); n != len(lacking) || dev.fleet().chunksAddedSince(t, before) != len(lacking) {
			t.Errorf("re-release fetched %d chunks; the device lacked %d of release 1's", n, len(lacking))
		}

		op.run("devices", "assign", "dev-net", "digits", "1")
		eventually(t, "lower counter refused", func() bool {
			m := reported(srv, "dev-net")
			return m != nil && strings.Contains(m.GetLastError(), "release counter lower than installed") && m.GetStagedRelease() == 5
		})
		if got := dev.fleet().staged(t)["digits"]; got != st {
			t.Fatalf("staged %+v after the refusal, was %+v", got, st)
		}
	})
}

func writeString(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func chunksOf(t *testing.T, s *bundle.Store, digest string) int {
	t.Helper()
	_, m, err := s.Manifest(digest)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range m.GetFiles() {
		n += len(f.GetChunks())
	}
	return n
}

// retiredTargets is repo's targets.json with path (manifest) added, its
// version raised, signed by keys alone.
func retiredTargets(t *testing.T, repo *release.Repository, path string, manifest []byte, keys []*release.Key) []byte {
	t.Helper()
	tm, err := repo.TargetsMeta()
	if err != nil {
		t.Fatal(err)
	}
	tf, err := metadata.TargetFile().FromBytes(path, manifest, "sha256")
	if err != nil {
		t.Fatal(err)
	}
	custom := json.RawMessage(`{"model":"digits","release_counter":5}`)
	tf.Custom = &custom
	tm.Signed.Targets[path] = tf
	tm.Signed.Version++
	tm.ClearSignatures()
	for _, k := range keys[:2] {
		sign(t, tm, k)
	}
	b, err := tm.ToBytes(true)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sign[T metadata.Roles](t *testing.T, md *metadata.Metadata[T], k *release.Key) {
	t.Helper()
	s, err := signature.LoadED25519Signer(k.Private)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := md.Sign(s); err != nil {
		t.Fatal(err)
	}
}

// onlineSign signs a snapshot naming repo's targets and a timestamp naming
// it with the online key, as the server would, versions above repo's.
func onlineSign(t *testing.T, repo *release.Repository, keys string) {
	t.Helper()
	online, err := release.ReadKeys(filepath.Join(keys, "online"), release.RoleOnline)
	if err != nil || len(online) != 1 {
		t.Fatalf("online key: %v", err)
	}
	tm, _ := repo.TargetsMeta()
	oldSnap, err := metadata.Snapshot().FromBytes(repo.Snapshot)
	if err != nil {
		t.Fatal(err)
	}
	oldTS, err := metadata.Timestamp().FromBytes(repo.Timestamp)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	snap := metadata.Snapshot(now.Add(time.Hour))
	snap.Signed.Version = oldSnap.Signed.Version + 1
	snap.Signed.Meta[release.FileTargets] = metaFile(tm.Signed.Version, repo.Targets)
	sign(t, snap, online[0])
	if repo.Snapshot, err = snap.ToBytes(true); err != nil {
		t.Fatal(err)
	}
	ts := metadata.Timestamp(now.Add(time.Hour))
	ts.Signed.Version = oldTS.Signed.Version + 1
	ts.Signed.Meta[release.FileSnapshot] = metaFile(snap.Signed.Version, repo.Snapshot)
	ts.Signed.UnrecognizedFields = map[string]any{release.IssuedField: now.Format(time.RFC3339)}
	sign(t, ts, online[0])
	if repo.Timestamp, err = ts.ToBytes(true); err != nil {
		t.Fatal(err)
	}
}

func metaFile(version int64, b []byte) *metadata.MetaFiles {
	sum := sha256Sum(b)
	m := metadata.MetaFile(version)
	m.Length = int64(len(b))
	m.Hashes = metadata.Hashes{"sha256": sum}
	return m
}
