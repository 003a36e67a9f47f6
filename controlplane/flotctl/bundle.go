package flotctl

import (
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// bundleSummary is what `flotctl bundle build|show` prints.
type bundleSummary struct {
	Digest  string `json:"digest"`
	Name    string `json:"name"`
	Release uint64 `json:"release"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	Files   int    `json:"files"`
	Chunks  int    `json:"chunks"`
	Bytes   uint64 `json:"bytes"`
	Store   string `json:"store"`
}

// bundleCmd runs the bundle commands. They work on local folders only, so
// they need no server, token or CA.
func bundleCmd(o out, stderr io.Writer, args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: bundle build|show|rerelease|push", errUsage)
	}
	fs := flag.NewFlagSet("bundle "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	switch args[0] {
	case "build":
		outDir := fs.String("o", "", "bundle store folder to write the manifest and chunks into (default DIR.bundle)")
		chunk := fs.Int("chunk-size", pb.DefaultChunkSize, "chunk size in bytes")
		bf := addBaselineFlags(fs)
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 {
			return fmt.Errorf("%w: bundle build DIR [-o STORE] [-chunk-size N] [-baseline DATA.csv]", errUsage)
		}
		dir := pos[0]
		if *outDir == "" {
			*outDir = filepath.Clean(dir) + ".bundle"
		}
		s, err := bundle.OpenStore(*outDir)
		if err != nil {
			return err
		}
		raw, digest, err := bundle.Build(dir, bundle.Options{ChunkSize: *chunk, Chunks: s})
		if err != nil {
			return err
		}
		if raw, digest, err = bf.apply(dir, raw, digest); err != nil {
			return err
		}
		if _, err := s.PutManifest(raw); err != nil {
			return err
		}
		return printBundle(o, s, digest)
	case "show":
		store := fs.String("store", "", "bundle store folder")
		pos, err := parseInterspersed(fs, args[1:])
		if err != nil {
			return err
		}
		if len(pos) != 1 || *store == "" {
			return fmt.Errorf("%w: bundle show -store STORE DIGEST", errUsage)
		}
		s, err := bundle.OpenStore(*store)
		if err != nil {
			return err
		}
		return printBundle(o, s, pos[0])
	case "baseline":
		return bundleBaseline(o.w, stderr, args[1:])
	case "rerelease":
		return bundleRerelease(o, args[1:], time.Now())
	}
	return fmt.Errorf("%w: unknown bundle command %q (build, show, rerelease, push)", errUsage, args[0])
}

func printBundle(o out, s *bundle.Store, digest string) error {
	_, m, err := s.Manifest(digest)
	if err != nil {
		return err
	}
	sum := bundleSummary{Digest: digest, Name: m.GetName(), Release: m.GetRelease(), Version: m.GetVersion(),
		Kind: strings.ToLower(strings.TrimPrefix(m.GetKind().String(), "BUNDLE_KIND_")), Files: len(m.GetFiles()), Store: s.Dir()}
	for _, f := range m.GetFiles() {
		sum.Chunks += len(f.GetChunks())
		sum.Bytes += f.GetSize()
	}
	return o.print(sum, func(tw io.Writer) {
		fmt.Fprintf(tw, "digest\t%s\nname\t%s\nrelease\t%d\nversion\t%s\nfiles\t%d\nchunks\t%d\nbytes\t%d\nstore\t%s\n",
			sum.Digest, sum.Name, sum.Release, sum.Version, sum.Files, sum.Chunks, sum.Bytes, sum.Store)
	})
}
