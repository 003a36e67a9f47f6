package trust

import (
	"bytes"
	"errors"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

var fuzzNames = []string{"root.json", "2.root.json", "timestamp.json", "snapshot.json", "targets.json"}

// FuzzVerifyMetadata feeds arbitrary bytes as one metadata file of either
// repository into the full verification path (size checks, go-tuf parsing
// and verification, our refusal classification). It must never panic, every
// refusal must wrap a sentinel, and a refusal must change nothing.
func FuzzVerifyMetadata(f *testing.F) {
	fx := newFixture(f, release.DefaultExpiry)
	path := release.TargetPath("resnet", 1)
	md, dm := fx.repo.Metadata(), fx.assign(path)
	for i, name := range fuzzNames {
		if b, ok := md[name]; ok {
			f.Add(uint8(i), false, b)
		}
		if b, ok := dm[name]; ok {
			f.Add(uint8(i), true, b)
		}
	}
	f.Add(uint8(2), false, []byte(`{"signed":{"_type":"timestamp","version":99,"meta":{}},"signatures":[{"keyid":"a","sig":"zz"},{"keyid":"a","sig":"zz"}]}`))
	f.Add(uint8(4), true, []byte(`{"signed":{"_type":"targets","targets":{"../x":{"length":-1,"hashes":{}}}},"signatures":[]}`))
	f.Fuzz(func(t *testing.T, which uint8, director bool, data []byte) {
		fx.t = t
		rel, dir := fx.repo.Metadata(), fx.assign(path)
		target := rel
		if director {
			target = dir
		}
		target[fuzzNames[int(which)%len(fuzzNames)]] = data
		before := fx.state()
		_, err := fx.v.VerifyForInstall(rel, dir)
		if err == nil {
			return
		}
		matched := false
		for _, s := range sentinels {
			matched = matched || errors.Is(err, s)
		}
		if !matched {
			t.Fatalf("refusal wraps no sentinel: %v", err)
		}
		if !bytes.Equal(before, fx.state()) {
			t.Fatalf("refusal changed state: %v", err)
		}
	})
}

// FuzzCheckFiles covers the first gate on network input: names and sizes.
func FuzzCheckFiles(f *testing.F) {
	f.Add("root.json", 10)
	f.Add("17.root.json", 70000)
	f.Add("01.root.json", 1)
	f.Add("../targets.json", 1)
	f.Fuzz(func(t *testing.T, name string, size int) {
		if size < 0 || size > 1<<20 {
			return
		}
		err := checkFiles("fuzz", map[string][]byte{name: make([]byte, size)}, DefaultLimits)
		if role, _, ok := roleOf(name); ok && int64(size) <= DefaultLimits.of(role) {
			if err != nil {
				t.Fatalf("valid %q size %d refused: %v", name, size, err)
			}
			return
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) {
			t.Fatalf("%q size %d: %v", name, size, err)
		}
	})
}
