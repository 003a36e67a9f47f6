package trust

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/release"
)

// FuzzOpenRoots feeds arbitrary bytes as the initial roots a device gets
// at enrolment. Open never panics; it accepts only self-signed roots, and
// a refusal wraps ErrTooLarge, ErrMalformed or ErrBelowThreshold and
// writes no state.
func FuzzOpenRoots(f *testing.F) {
	fx := newFixture(f, release.DefaultExpiry)
	rel, dir := fx.repo.Roots[0], fx.director.Roots()[0]
	f.Add(rel, dir)
	f.Add(rel[:len(rel)/2], dir)
	f.Add(dir, rel)
	f.Add([]byte(`{"signed":{"_type":"root","version":1,"keys":{},"roles":{}},"signatures":[]}`), dir)
	f.Add([]byte(`{"signed":{"_type":"targets"},"signatures":[]}`), dir)
	f.Add([]byte("null"), []byte("[]"))
	f.Fuzz(func(t *testing.T, relRoot, dirRoot []byte) {
		d := t.TempDir()
		v, err := Open(Config{Dir: d, DeviceID: "dev-1", ReleaseRoot: relRoot, DirectorRoot: dirRoot, Now: func() time.Time { return t0 }})
		if err == nil {
			if selfSigned(relRoot) != nil || selfSigned(dirRoot) != nil {
				t.Fatal("opened on a root that is not self-signed")
			}
			if r, dv := v.RootVersions(); r < 1 || dv < 1 {
				t.Fatalf("root versions %d, %d", r, dv)
			}
			return
		}
		if !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrBelowThreshold) {
			t.Fatalf("refusal wraps no sentinel: %v", err)
		}
		if _, serr := os.Stat(filepath.Join(d, stateFile)); !errors.Is(serr, os.ErrNotExist) {
			t.Fatalf("refused roots left state behind (%v)", serr)
		}
	})
}
