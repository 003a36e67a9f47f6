package flotctl

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// TestBundleRerelease: release 1 of digits, then release 2; `bundle
// rerelease digits 1` stores a manifest equal to release 1's but for its
// counter (3, one above the highest) and releases it with the old
// target's kind and hardware ids. Unknown releases, counters not above
// the highest and a store without the old manifest are refused with
// nothing written.
func TestBundleRerelease(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "trust")
	if out, code := runOffline(t, "keys", "generate", "-dir", dir, "-threshold", "2", "-count", "3"); code != 0 {
		t.Fatalf("generate: %d %s", code, out)
	}
	store := filepath.Join(t.TempDir(), "digits.bundle")
	src := filepath.Join("..", "bundle", "testdata", "digits")
	if out, code := runOffline(t, "bundle", "build", src, "-o", store, "-chunk-size", "4096"); code != 0 {
		t.Fatalf("build: %d %s", code, out)
	}
	s, err := bundle.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	d1, err := onlyManifest(store)
	if err != nil {
		t.Fatal(err)
	}
	if out, code := runOffline(t, "release", "add", "-keys", dir, "-model", "digits", "-counter", "1", "-version", "1.0.0",
		"-hardware", "rpi4,jetson", filepath.Join(store, "manifests", d1)); code != 0 {
		t.Fatalf("release add 1: %d %s", code, out)
	}
	// Release 2 is some other manifest (its content does not matter here).
	other := filepath.Join(t.TempDir(), "other.manifest")
	if err := writeTestFile(other, "release two"); err != nil {
		t.Fatal(err)
	}
	if out, code := runOffline(t, "release", "add", "-keys", dir, "-model", "digits", "-counter", "2", other); code != 0 {
		t.Fatalf("release add 2: %d %s", code, out)
	}
	repoBefore, _ := release.OpenDir(filepath.Join(dir, "repo"))

	for name, args := range map[string][]string{
		"unknown release":   {"bundle", "rerelease", "digits", "7", "-keys", dir, "-store", store},
		"unknown model":     {"bundle", "rerelease", "resnet", "1", "-keys", dir, "-store", store},
		"counter not above": {"bundle", "rerelease", "digits", "1", "-counter", "2", "-keys", dir, "-store", store},
		"manifest absent":   {"bundle", "rerelease", "digits", "2", "-keys", dir, "-store", store},
		"no keys":           {"bundle", "rerelease", "digits", "1", "-store", store},
		"bad counter":       {"bundle", "rerelease", "digits", "one", "-keys", dir, "-store", store},
	} {
		if out, code := runOffline(t, args...); code == 0 {
			t.Errorf("%s: accepted: %s", name, out)
		} else if name == "manifest absent" && !strings.Contains(out, "is not in") {
			t.Errorf("%s: %s", name, out)
		}
		after, _ := release.OpenDir(filepath.Join(dir, "repo"))
		if string(after.Targets) != string(repoBefore.Targets) {
			t.Fatalf("%s: targets.json changed", name)
		}
	}

	out, code := runOffline(t, "-json", "bundle", "rerelease", "digits", "1", "-keys", dir, "-store", store)
	if code != 0 {
		t.Fatalf("rerelease: %d %s", code, out)
	}
	var res rereleaseResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if res.Release != 3 || res.From != 1 || res.FromDigest != d1 || res.Version != "1.0.0" || res.MissingChunks != 0 ||
		res.Target != release.TargetPath("digits", 3) {
		t.Fatalf("result %+v", res)
	}
	raw3, m3, err := s.Manifest(res.Digest)
	if err != nil {
		t.Fatal(err)
	}
	_, m1, _ := s.Manifest(d1)
	if m3.GetRelease() != 3 {
		t.Fatalf("re-released manifest says release %d", m3.GetRelease())
	}
	m3.Release = m1.GetRelease()
	if !proto.Equal(m1, m3) {
		t.Fatal("re-released manifest differs from release 1 beyond its counter")
	}
	repo, err := release.OpenDir(filepath.Join(dir, "repo"))
	if err != nil {
		t.Fatal(err)
	}
	tf, err := repo.Target(res.Target)
	if err != nil {
		t.Fatal(err)
	}
	var c release.ReleaseCustom
	if err := json.Unmarshal(*tf.Custom, &c); err != nil {
		t.Fatal(err)
	}
	if tf.Length != int64(len(raw3)) || hex.EncodeToString(tf.Hashes["sha256"]) != res.Digest ||
		c.Model != "digits" || c.ReleaseCounter != 3 || c.Kind != "model" || strings.Join(c.HardwareIDs, ",") != "rpi4,jetson" {
		t.Fatalf("released target %+v custom %+v", tf, c)
	}
	// The same again gets the next counter; an explicit one above works too.
	if out, code := runOffline(t, "bundle", "rerelease", "digits", "1", "-counter", "9", "-version", "1.0.0-r9", "-keys", dir, "-store", store); code != 0 || !strings.Contains(out, "as release 9") {
		t.Fatalf("rerelease -counter 9: %d %s", code, out)
	}
}

func writeTestFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o644) }
