package sqlstore_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/bundle/sqlstore"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/controlplane/store/pgtest"
)

// chunkSource is what a wave or a repair reads a bundle through.
type chunkSource interface {
	PutChunk(sum [32]byte, data []byte) error
	Chunk(sum [32]byte) ([]byte, error)
}

// BenchmarkChunkRead reads 256 KiB chunks, verified, as a wave does: from
// the folder store (the baseline, a single server's) and from PostgreSQL
// (replicas'), side by side in one run.
func BenchmarkChunkRead(b *testing.B) {
	folder, err := bundle.OpenStore(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	st, err := store.OpenPostgres(context.Background(), pgtest.Database(b))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for _, c := range []struct {
		name string
		s    chunkSource
	}{{"folder", folder}, {"postgres", sqlstore.New(st, nil)}} {
		b.Run(c.name, func(b *testing.B) {
			const n = 64 // 16 MiB
			sums := make([][32]byte, n)
			for i := range sums {
				data := make([]byte, 256<<10)
				rand.Read(data)
				sums[i] = sha256.Sum256(data)
				if err := c.s.PutChunk(sums[i], data); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(256 << 10)
			b.ResetTimer()
			for i := range b.N {
				if _, err := c.s.Chunk(sums[i%n]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
