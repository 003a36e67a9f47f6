package sqlstore

import (
	"fmt"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
)

// Import copies every manifest of the folder store from, with the chunks
// it names, into s: each chunk read back verified from the folder and
// stored under its hash, then the manifest, which the database takes
// only once every chunk it names is there. It is idempotent (what is
// there already is left) and deletes nothing: the folder stays as it
// was, for the operator to remove once the import is logged. It returns
// how many manifests it imported.
func Import(from *bundle.Store, s *Store) (int, error) {
	digests, err := from.Manifests()
	if err != nil {
		return 0, fmt.Errorf("import bundles: %w", err)
	}
	n := 0
	for _, dg := range digests {
		raw, m, err := from.Manifest(dg)
		if err != nil {
			return n, fmt.Errorf("import bundle %.16s: %w", dg, err)
		}
		for _, f := range m.GetFiles() {
			for _, c := range f.GetChunks() {
				sum := [32]byte(c.GetSha256())
				if s.HasChunk(sum) {
					continue
				}
				data, err := from.Chunk(sum)
				if err != nil {
					return n, fmt.Errorf("import bundle %.16s: %w", dg, err)
				}
				if err := s.PutChunk(sum, data); err != nil {
					return n, fmt.Errorf("import bundle %.16s: %w", dg, err)
				}
			}
		}
		if _, err := s.PutManifest(raw); err != nil {
			return n, fmt.Errorf("import bundle %.16s: %w", dg, err)
		}
		n++
	}
	return n, nil
}
