package bundle_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// copyDigits copies testdata/digits into a fresh folder the test may change.
func copyDigits(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS(filepath.Join("testdata", "digits"))); err != nil {
		t.Fatal(err)
	}
	return dst
}

func build(t *testing.T, dir string, opts bundle.Options) ([]byte, string, *pb.BundleManifest) {
	t.Helper()
	raw, digest, err := bundle.Build(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := new(pb.BundleManifest)
	if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
		t.Fatal(err)
	}
	return raw, digest, m
}

func TestBuildDigits(t *testing.T) {
	_, digest, m := build(t, filepath.Join("testdata", "digits"), bundle.Options{})
	if len(digest) != 64 {
		t.Fatalf("digest %q", digest)
	}
	var paths []string
	for _, f := range m.GetFiles() {
		paths = append(paths, f.GetPath())
	}
	if got := strings.Join(paths, ","); got != "labels.txt,model.onnx" {
		t.Fatalf("files = %s; the config, golden/ and drift.json must be left out", got)
	}
	if m.GetName() != "digits" || m.GetRelease() != 1 || m.GetKind() != pb.BundleKind_BUNDLE_KIND_MODEL {
		t.Fatalf("metadata: %v", m)
	}
	if g := m.GetGolden(); len(g.GetInputs()[0].GetData()) != 4*64*4 || len(g.GetExpected()[0].GetData()) != 4*10*4 {
		t.Fatalf("golden tensors: %v", g)
	}
	if d := m.GetDrift(); len(d.GetFeatures()) != 64 || d.GetThresholds().GetJs() != 0.1 || len(d.GetPrediction().GetCounts()) != 11 {
		t.Fatalf("drift baseline: %d features, thresholds %v", len(d.GetFeatures()), d.GetThresholds())
	}
	if p := m.GetProbation(); p.GetDurationS() != 600 || !p.GetShadow() {
		t.Fatalf("probation: %v", p)
	}
	if f := m.GetFiles()[1]; f.GetSize() != 27198 || len(f.GetChunks()) != 1 || f.GetMode() != 0o644 {
		t.Fatalf("model.onnx: %v", f)
	}
}

// TestBuildDeterministic: the same content gives the same digest whatever
// the times, permissions beyond the execute bit, or the folder; one changed
// file changes only its own chunks.
func TestBuildDeterministic(t *testing.T) {
	opts := bundle.Options{ChunkSize: pb.MinChunkSize}
	a, b := copyDigits(t), copyDigits(t)
	rawA, dA, mA := build(t, a, opts)
	rawB, dB, _ := build(t, b, opts)
	if dA != dB || !bytes.Equal(rawA, rawB) {
		t.Fatal("two builds of the same content differ")
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := os.Chtimes(filepath.Join(b, "model.onnx"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(b, "labels.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, d, _ := build(t, b, opts); d != dA {
		t.Fatal("mtime or a non-execute mode bit changed the digest")
	}

	// One byte in the middle of model.onnx: that one chunk differs, nothing else.
	model := filepath.Join(b, "model.onnx")
	data, _ := os.ReadFile(model)
	data[10000] ^= 0xff
	if err := os.WriteFile(model, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, dC, mC := build(t, b, opts)
	if dC == dA {
		t.Fatal("changed content, same digest")
	}
	var changed []string
	for i, f := range mC.GetFiles() {
		for j, c := range f.GetChunks() {
			if !bytes.Equal(c.GetSha256(), mA.GetFiles()[i].GetChunks()[j].GetSha256()) {
				changed = append(changed, f.GetPath()+":"+string(rune('0'+j)))
			}
		}
	}
	if len(changed) != 1 || changed[0] != "model.onnx:2" {
		t.Fatalf("changed chunks %v, want only model.onnx chunk 2", changed)
	}
}

func TestBuildExecutableMode(t *testing.T) {
	dir := copyDigits(t)
	if err := os.Chmod(filepath.Join(dir, "labels.txt"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, _, m := build(t, dir, bundle.Options{})
	if m.GetFiles()[0].GetMode() != 0o755 {
		t.Fatalf("mode %#o, want 0755", m.GetFiles()[0].GetMode())
	}
}

// TestBuildRefuses: what a bundle cannot carry is an error, never skipped.
func TestBuildRefuses(t *testing.T) {
	cases := map[string]func(t *testing.T, dir string){
		"symlink to a file inside": func(t *testing.T, dir string) {
			must(t, os.Symlink("model.onnx", filepath.Join(dir, "alias.onnx")))
		},
		"symlink outside": func(t *testing.T, dir string) {
			must(t, os.Symlink("/etc/passwd", filepath.Join(dir, "passwd")))
		},
		"symlinked folder": func(t *testing.T, dir string) {
			must(t, os.Symlink(os.TempDir(), filepath.Join(dir, "tmp")))
		},
		"fifo": func(t *testing.T, dir string) {
			must(t, syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644))
		},
		"backslash in a name": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, `a\b`), []byte("x"), 0o644))
		},
		"control character in a name": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "a\nb"), []byte("x"), 0o644))
		},
		"no config": func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "bundle.toml")))
		},
		"two configs": func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, "bundle.toml"))
			must(t, os.WriteFile(filepath.Join(dir, "flotilla-bundle.toml"), b, 0o644))
		},
		"unknown key": func(t *testing.T, dir string) { replaceConfig(t, dir, "max_error_rate", "max_eror_rate") },
		"entry missing": func(t *testing.T, dir string) {
			must(t, os.Remove(filepath.Join(dir, "model.onnx")))
		},
		"golden file outside": func(t *testing.T, dir string) {
			replaceConfig(t, dir, "golden/pixels.json", "../../../etc/passwd.json")
		},
		"golden wrong size": func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "golden", "pixels.json"), []byte("[1,2,3]"), 0o644))
		},
		"bad kind":     func(t *testing.T, dir string) { replaceConfig(t, dir, `kind = "model"`, `kind = "firmware"`) },
		"bad name":     func(t *testing.T, dir string) { replaceConfig(t, dir, `name = "digits"`, `name = "../digits"`) },
		"zero release": func(t *testing.T, dir string) { replaceConfig(t, dir, `release = 1`, `release = 0`) },
	}
	for name, setup := range cases {
		t.Run(name, func(t *testing.T) {
			dir := copyDigits(t)
			setup(t, dir)
			if _, _, err := bundle.Build(dir, bundle.Options{}); err == nil {
				t.Fatal("built")
			}
		})
	}
	if _, _, err := bundle.Build(copyDigits(t), bundle.Options{ChunkSize: 100}); err == nil {
		t.Fatal("built with a 100-byte chunk size")
	}
}

func TestBuildRefusesSymlinkKind(t *testing.T) {
	dir := copyDigits(t)
	must(t, os.Symlink("model.onnx", filepath.Join(dir, "alias.onnx")))
	if _, _, err := bundle.Build(dir, bundle.Options{}); !errors.Is(err, bundle.ErrRefused) {
		t.Fatalf("err = %v, want ErrRefused", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func replaceConfig(t *testing.T, dir, old, new string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "bundle.toml"))
	must(t, err)
	if !bytes.Contains(b, []byte(old)) {
		t.Fatalf("bundle.toml has no %q", old)
	}
	must(t, os.WriteFile(filepath.Join(dir, "bundle.toml"), bytes.Replace(b, []byte(old), []byte(new), 1), 0o644))
}
