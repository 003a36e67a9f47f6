package server

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/bundle/sqlstore"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
)

// bundleStore keeps the uploaded bundles: chunks by hash and manifests by
// digest, verified on the way in and out. On SQLite, which one server
// uses, it is the data folder's (bundle.Store, DATA/bundles); on
// PostgreSQL the database's (sqlstore.Store), so an upload to any replica
// is served by every one.
type bundleStore interface {
	delivery.Source
	PutChunk(sum [32]byte, data []byte) error
	HasChunk(sum [32]byte) bool
	PutManifest(raw []byte) (string, error)
}

var (
	_ bundleStore = (*bundle.Store)(nil)
	_ bundleStore = (*sqlstore.Store)(nil)
)

// importedMarker, in DATA/bundles, records that the folder's bundles were
// imported into the database; the folder is then left for the operator
// to remove.
const importedMarker = "IMPORTED-INTO-DATABASE"

// chunkGrace is how long a chunk no manifest names is kept: chunks are
// uploaded before their manifest, and an upload may be slow.
const chunkGrace = 24 * time.Hour

// openBundles opens the bundle store for the server's database; on
// PostgreSQL, a data folder's bundles from before are imported once.
func (s *Server) openBundles() (bundleStore, error) {
	dir := filepath.Join(s.cfg.DataDir, "bundles")
	if s.store.Backend() != "postgres" {
		return bundle.OpenStore(dir)
	}
	db := sqlstore.New(s.store, s.cfg.Now)
	if _, err := os.Stat(filepath.Join(dir, "manifests")); err != nil {
		return db, nil // no folder store: nothing to import
	}
	if _, err := os.Stat(filepath.Join(dir, importedMarker)); err == nil {
		return db, nil
	}
	folder, err := bundle.OpenStore(dir)
	if err != nil {
		return nil, err
	}
	n, err := sqlstore.Import(folder, db)
	if err != nil {
		return nil, fmt.Errorf("import the data folder's bundles into the database: %w", err)
	}
	note := fmt.Sprintf("%d bundles imported into the database at %s; this folder is no longer read and may be removed\n", n, s.cfg.Now().UTC().Format(time.RFC3339))
	if err := os.WriteFile(filepath.Join(dir, importedMarker), []byte(note), 0o644); err != nil {
		return nil, err
	}
	s.log.Info("bundles imported from the data folder into the database", "bundles", n, "folder", dir)
	return db, nil
}

// collectChunks deletes the chunks in the database that no manifest
// names and that are older than chunkGrace (PostgreSQL only; the folder
// store keeps everything).
func (d *deliveryService) collectChunks(ctx context.Context) {
	if _, ok := d.store.(*sqlstore.Store); !ok {
		return
	}
	n, err := d.s.store.CollectChunks(ctx, d.s.cfg.Now().Add(-chunkGrace).UnixMilli())
	if err != nil {
		d.s.log.Warn("unreferenced chunks not collected", "err", err)
	} else if n > 0 {
		d.s.log.Info("unreferenced chunks collected", "chunks", n)
	}
}
