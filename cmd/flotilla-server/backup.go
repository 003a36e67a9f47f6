package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/flotilla-edge/flotilla/controlplane/backup"
	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// runBackup: flotilla-server backup -out FILE [-data-dir D] [-database URL].
// It runs beside a live server: the database copy is consistent and the
// server's files are replaced only by atomic renames.
func runBackup(args []string) error {
	fs := flag.NewFlagSet("flotilla-server backup", flag.ContinueOnError)
	dataDir := fs.String("data-dir", env("FLOTILLA_DATA_DIR", "flotilla-data"), "the server's data folder")
	database := fs.String("database", env("FLOTILLA_DATABASE_URL", ""), "the server's PostgreSQL URL, if it uses one (its database is then not in the archive: use pg_dump)")
	out := fs.String("out", "", "archive to write (.tar.gz); it holds the CA and release keys: keep it as safe as the server")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("backup: -out is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := backup.Options{Version: version}
	if *database == "" {
		st, err := store.OpenSQLite(ctx, filepath.Join(*dataDir, backup.DatabaseName))
		if err != nil {
			return err
		}
		defer st.Close()
		opts.SnapshotDB = st.BackupTo
	}
	tmp := *out + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	m, err := backup.Create(ctx, f, *dataDir, opts)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, *out)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	var bytes int64
	for _, e := range m.Files {
		bytes += e.Size
	}
	fmt.Printf("backup: %s: %d files, %d bytes; database: %s\n", *out, len(m.Files), bytes, m.Database)
	return nil
}

// runRestore: flotilla-server restore -from FILE -data-dir D (D absent or
// empty). Start the server on D afterwards, on the same addresses.
func runRestore(args []string) error {
	fs := flag.NewFlagSet("flotilla-server restore", flag.ContinueOnError)
	dataDir := fs.String("data-dir", env("FLOTILLA_DATA_DIR", "flotilla-data"), "the new data folder (must not exist, or be empty)")
	from := fs.String("from", "", "archive made by flotilla-server backup")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *from == "" {
		return fmt.Errorf("restore: -from is required")
	}
	f, err := os.Open(*from)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	m, err := backup.Restore(f, *dataDir, backup.Limits{})
	if err != nil {
		return err
	}
	fmt.Printf("restore: %d files into %s (backup of %s, server %s); database: %s\n",
		len(m.Files), *dataDir, m.CreatedAt.Format("2006-01-02T15:04:05Z"), m.Version, m.Database)
	return nil
}
