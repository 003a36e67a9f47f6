package unpack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/agent/chunkstore"
	"github.com/flotilla-edge/flotilla/agent/unpack"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

var ctx = context.Background()

// memSource is an in-memory ChunkReader: chunks by hash, as a store that
// already verified them holds them.
type memSource map[[32]byte][]byte

func (s memSource) Read(_ context.Context, sum [32]byte) ([]byte, error) {
	if d, ok := s[sum]; ok {
		return d, nil
	}
	return nil, chunkstore.ErrNotFound
}

type file struct {
	data []byte
	mode uint32
}

// mkBundle makes a manifest of files with 4 KiB chunks, and puts the chunks
// in src.
func mkBundle(files map[string]file, src memSource) *pb.BundleManifest {
	m := &pb.BundleManifest{SchemaVersion: 1, Name: "t", Release: 1, Kind: pb.BundleKind_BUNDLE_KIND_MODEL}
	var paths []string
	for p := range files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := files[p]
		whole := sha256.Sum256(f.data)
		bf := &pb.BundleFile{Path: p, Size: uint64(len(f.data)), Mode: f.mode, ChunkSize: pb.MinChunkSize, Sha256: whole[:]}
		for off := 0; off < len(f.data); off += pb.MinChunkSize {
			c := f.data[off:min(off+pb.MinChunkSize, len(f.data))]
			sum := sha256.Sum256(c)
			src[sum] = c
			bf.Chunks = append(bf.Chunks, &pb.ChunkInfo{Sha256: sum[:], Length: uint32(len(c))})
		}
		m.Files = append(m.Files, bf)
	}
	m.Variants = []*pb.RuntimeVariant{{Runtime: "onnx", Entry: paths[0]}}
	return m
}

func sampleFiles() map[string]file {
	big := bytes.Repeat([]byte("weights!"), 1500) // 12000 bytes: three chunks
	return map[string]file{
		"model.onnx":      {big, 0o644},
		"bin/pre.wasm":    {[]byte("\x00asm"), 0o755},
		"bin/sub/cfg.txt": {[]byte("k=v\n"), 0o600},
		"empty":           {nil, 0o644},
	}
}

// TestUnpackFromChunkStore: the happy path through the real chunk store,
// then a second unpack replacing the slot.
func TestUnpackFromChunkStore(t *testing.T) {
	mem := memSource{}
	files := sampleFiles()
	m := mkBundle(files, mem)
	cs, err := chunkstore.Open(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	for _, r := range cs.Missing(m) {
		if err := cs.Put(ctx, r, mem[r.SHA256]); err != nil {
			t.Fatal(err)
		}
	}
	parent := t.TempDir()
	slot := filepath.Join(parent, "b")
	if err := unpack.Unpack(ctx, cs, m, slot, unpack.Limits{}); err != nil {
		t.Fatal(err)
	}
	for p, f := range files {
		got, err := os.ReadFile(filepath.Join(slot, p))
		if err != nil || !bytes.Equal(got, f.data) {
			t.Fatalf("%s: %v, content equal %v", p, err, bytes.Equal(got, f.data))
		}
		st, _ := os.Stat(filepath.Join(slot, p))
		if uint32(st.Mode()) != f.mode {
			t.Errorf("%s: mode %v, want %#o", p, st.Mode(), f.mode)
		}
	}
	// Replace the slot with another bundle: only the new files remain.
	m2 := mkBundle(map[string]file{"model.onnx": {[]byte("v2"), 0o644}}, mem)
	if err := unpack.Unpack(ctx, mem, m2, slot, unpack.Limits{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(slot, "bin")); err == nil {
		t.Fatal("old slot content survived the replacement")
	}
	assertOnly(t, parent, "b")
}

// assertOnly fails unless parent holds exactly names (no temporary folder
// left behind, nothing written beside the slot).
func assertOnly(t *testing.T, parent string, names ...string) {
	t.Helper()
	ents, _ := os.ReadDir(parent)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if fmt.Sprint(got) != fmt.Sprint(names) {
		t.Fatalf("%s holds %v, want %v", parent, got, names)
	}
}

// hostileSource serves the wrong bytes for every chunk: a store that was
// tampered with under the agent.
type hostileSource struct{}

func (hostileSource) Read(_ context.Context, _ [32]byte) ([]byte, error) {
	return []byte("evil"), nil
}

// TestUnpackRefuses: each hostile manifest or source is refused with its
// error, leaves an existing slot exactly as it was, and leaves no
// temporary folder.
func TestUnpackRefuses(t *testing.T) {
	type tc struct {
		mutate func(m *pb.BundleManifest)
		src    unpack.ChunkReader
		lim    unpack.Limits
		want   error
	}
	cases := map[string]tc{
		"dotdot":            {mutate: func(m *pb.BundleManifest) { m.Files[0].Path = "../escape" }, want: unpack.ErrInvalid},
		"inner dotdot":      {mutate: func(m *pb.BundleManifest) { m.Files[0].Path = "bin/../../escape" }, want: unpack.ErrInvalid},
		"absolute":          {mutate: func(m *pb.BundleManifest) { m.Files[0].Path = "/tmp/escape" }, want: unpack.ErrInvalid},
		"backslash":         {mutate: func(m *pb.BundleManifest) { m.Files[0].Path = `..\escape` }, want: unpack.ErrInvalid},
		"nul":               {mutate: func(m *pb.BundleManifest) { m.Files[0].Path = "a\x00b" }, want: unpack.ErrInvalid},
		"setuid":            {mutate: func(m *pb.BundleManifest) { m.Files[0].Mode = 0o4755 }, want: unpack.ErrInvalid},
		"sticky":            {mutate: func(m *pb.BundleManifest) { m.Files[0].Mode = 0o1644 }, want: unpack.ErrInvalid},
		"device bit":        {mutate: func(m *pb.BundleManifest) { m.Files[0].Mode = uint32(os.ModeDevice) | 0o644 }, want: unpack.ErrInvalid},
		"file and folder":   {mutate: func(m *pb.BundleManifest) { m.Files[1].Path = "bin/pre.wasm/x" }, want: unpack.ErrInvalid},
		"duplicate":         {mutate: func(m *pb.BundleManifest) { m.Files[1].Path = m.Files[0].Path }, want: unpack.ErrInvalid},
		"file over limit":   {lim: unpack.Limits{MaxFileSize: 11999}, want: unpack.ErrTooLarge},
		"total over limit":  {lim: unpack.Limits{MaxTotalSize: 12000}, want: unpack.ErrTooLarge},
		"wrong chunk bytes": {src: hostileSource{}, want: unpack.ErrMismatch},
		"wrong file hash":   {mutate: func(m *pb.BundleManifest) { m.Files[3].Sha256[0] ^= 1 }, want: unpack.ErrMismatch},
		"missing chunk":     {src: memSource{}, want: chunkstore.ErrNotFound},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			mem := memSource{}
			m := mkBundle(sampleFiles(), mem)
			if c.mutate != nil {
				c.mutate(m)
			}
			src := c.src
			if src == nil {
				src = mem
			}
			parent := t.TempDir()
			slot := filepath.Join(parent, "slot")
			if err := os.MkdirAll(slot, 0o755); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(slot, "old"), []byte("old"), 0o644)
			err := unpack.Unpack(ctx, src, m, slot, c.lim)
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if b, _ := os.ReadFile(filepath.Join(slot, "old")); string(b) != "old" {
				t.Fatal("the existing slot changed")
			}
			assertOnly(t, parent, "slot")
		})
	}
}

// TestUnpackRefusesSymlinkSlot: a slot that is a symbolic link (to a folder
// or elsewhere) or a file is never written through or replaced.
func TestUnpackRefusesSymlinkSlot(t *testing.T) {
	mem := memSource{}
	m := mkBundle(sampleFiles(), mem)
	parent, elsewhere := t.TempDir(), t.TempDir()
	slot := filepath.Join(parent, "slot")
	if err := os.Symlink(elsewhere, slot); err != nil {
		t.Fatal(err)
	}
	if err := unpack.Unpack(ctx, mem, m, slot, unpack.Limits{}); !errors.Is(err, unpack.ErrUnsafe) {
		t.Fatalf("err = %v, want ErrUnsafe", err)
	}
	assertOnly(t, elsewhere)
	os.Remove(slot)
	os.WriteFile(slot, []byte("x"), 0o644)
	if err := unpack.Unpack(ctx, mem, m, slot, unpack.Limits{}); !errors.Is(err, unpack.ErrUnsafe) {
		t.Fatalf("slot is a file: err = %v, want ErrUnsafe", err)
	}
	assertOnly(t, parent, "slot")
}

// FuzzUnpack feeds hostile manifests (chunks of a few known contents held
// by the source) to Unpack: it never panics, never writes beside the slot,
// and on error leaves no slot and no temporary folder.
func FuzzUnpack(f *testing.F) {
	mem := memSource{}
	good := mkBundle(sampleFiles(), mem)
	add := func(m *pb.BundleManifest) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	add(good)
	for _, mutate := range []func(m *pb.BundleManifest){
		func(m *pb.BundleManifest) { m.Files[0].Path = "../../x" },
		func(m *pb.BundleManifest) { m.Files[0].Path = "/etc/x" },
		func(m *pb.BundleManifest) { m.Files[2].Mode = 0o6755 },
		func(m *pb.BundleManifest) { m.Files[0].Chunks[0] = m.Files[3].Chunks[1] },
		func(m *pb.BundleManifest) { m.Files[3].Size = 1 << 40 },
		func(m *pb.BundleManifest) { m.Files = append(m.Files, m.Files[0]) },
	} {
		m := proto.Clone(good).(*pb.BundleManifest)
		mutate(m)
		add(m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m := new(pb.BundleManifest)
		if proto.Unmarshal(data, m) != nil {
			return
		}
		parent := t.TempDir()
		slot := filepath.Join(parent, "slot")
		err := unpack.Unpack(ctx, mem, m, slot, unpack.Limits{MaxTotalSize: 1 << 20})
		if err != nil {
			assertOnly(t, parent)
			return
		}
		assertOnly(t, parent, "slot")
	})
}
