// Package chunkstore is the agent's content-addressed store of bundle
// chunks: each chunk a file named by its SHA-256 under a fanned-out folder
// (chunks/ab/abcd…), and an SQLite index (chunks.db) of the chunks held.
//
// A chunk is verified as it is stored: Put refuses data whose length or
// SHA-256 differs from the manifest's, and never keeps it. It is written to
// a temporary file, fsynced, renamed into place and the folder fsynced
// before the index records it, so a power cut mid-write never leaves a
// half-written chunk that counts as present: a download resumes with
// Missing, which lists only what the index holds no record of. Chunks are
// shared across bundles, so a new version fetches only the chunks of the
// files that changed.
//
// Collect removes the chunks no live manifest names (collect.go): live is
// what the caller says (the manifests of the active and staged slots) plus
// every manifest Held for a download in progress in this process and every
// one Pinned, in the index, for a download that has started and not
// finished (pin.go), so a cut download keeps its chunks across restarts. The store holds at most
// Options.QuotaBytes of chunks: a Put that would go over collects first
// (asking Options.Live for the live set) and, if still over, is refused
// with ErrQuota, nothing written.
//
// Crash safety: Collect deletes index rows in one committed transaction
// and only then the files, so a crash between the two leaves files with
// no row, never a row without its file. Open repairs both directions: it
// removes chunk files the index does not name (what such a crash, or a
// torn write, leaves) and drops rows whose file is gone.
package chunkstore

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Errors callers branch on with errors.Is.
var (
	ErrMismatch = errors.New("chunk does not match the manifest")
	ErrNotFound = errors.New("chunk not in store")
	ErrQuota    = errors.New("chunk store quota exceeded")
)

// DefaultQuota is the chunk store's byte quota when Options.QuotaBytes is 0.
const DefaultQuota int64 = 1 << 30

// Options tunes a Store.
type Options struct {
	// QuotaBytes caps the bytes of chunks held; 0 = DefaultQuota.
	QuotaBytes int64
	// Live lists the manifests in use (the active and staged slots'),
	// for the collection a Put over quota runs first. Nil: such a Put
	// collects nothing (only Held manifests are known) and is refused.
	Live func() ([]*pb.BundleManifest, error)
	// MemoryIndex keeps the index in memory, not in DBFile: for agent/sim
	// only, so that thousands of simulated agents do not hold three open
	// files each. The chunks are still files in dir; as the index starts
	// empty, Open's repair removes the chunk files an earlier run left.
	MemoryIndex bool
}

// DBFile is the index's file name in the store's folder.
const DBFile = "chunks.db"

// pragmas as agent/state uses them: WAL, NORMAL sync, a busy timeout.
const pragmas = "_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(NORMAL)&_txlock=immediate"

const schema = `CREATE TABLE IF NOT EXISTS chunks (
	sha256       BLOB    NOT NULL PRIMARY KEY,
	length       INTEGER NOT NULL,
	stored_at_ms INTEGER NOT NULL
) WITHOUT ROWID`

// ChunkRef names one chunk of a manifest.
type ChunkRef struct {
	FileIndex  uint32
	ChunkIndex uint32
	SHA256     [32]byte
	Length     uint32
}

// Store is the agent's chunk store. It is safe for concurrent use.
type Store struct {
	dir  string
	db   *sql.DB
	opts Options

	// gate: Puts write under its read lock, Collect runs under its write
	// lock, so a collection never removes the file of a chunk a Put is
	// writing again.
	gate sync.RWMutex

	mu       sync.Mutex
	have     map[[32]byte]uint32           // the index, in memory: hash → length
	used     int64                         // bytes of the chunks in have
	reserved int64                         // bytes of Puts under way
	held     map[uint64]*pb.BundleManifest // manifests of downloads in progress
	nextHold uint64
	pins     map[string]*pb.BundleManifest // Pinned downloads, by key (pin.go)

	// afterIndexDelete, when set (tests), runs between Collect's committed
	// index delete and its file removals; an error stops Collect there, as
	// a crash would.
	afterIndexDelete func() error
}

// Open opens (creating if needed) the chunk store in dir with the default
// options.
func Open(ctx context.Context, dir string) (*Store, error) {
	return OpenOptions(ctx, dir, Options{})
}

// OpenOptions opens (creating if needed) the chunk store in dir, removing
// any temporary files a crash left behind and repairing the index against
// the chunk files (see the package comment).
func OpenOptions(ctx context.Context, dir string, opts Options) (*Store, error) {
	if opts.QuotaBytes < 0 {
		return nil, fmt.Errorf("open chunk store: quota %d is negative", opts.QuotaBytes)
	}
	if opts.QuotaBytes == 0 {
		opts.QuotaBytes = DefaultQuota
	}
	for _, d := range []string{dir, filepath.Join(dir, "chunks"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open chunk store: %w", err)
		}
	}
	if err := clearDir(filepath.Join(dir, "tmp")); err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	dsn := "file:" + filepath.Join(dir, DBFile) + "?" + pragmas
	if opts.MemoryIndex {
		// A private in-memory database per connection: the pool keeps
		// exactly one, forever.
		dsn = "file::memory:?" + pragmas
	}
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open chunk store: %w", err)
	}
	db.SetMaxOpenConns(1)
	if opts.MemoryIndex {
		db.SetMaxIdleConns(1)
		db.SetConnMaxIdleTime(0)
		db.SetConnMaxLifetime(0)
	}
	s := &Store{dir: dir, db: db, opts: opts, have: make(map[[32]byte]uint32),
		held: map[uint64]*pb.BundleManifest{}, pins: map[string]*pb.BundleManifest{}}
	if err := s.load(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	if err := s.loadPins(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	if err := s.repair(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open chunk store %s: %w", dir, err)
	}
	return s, nil
}

func (s *Store) load(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, schema); err != nil {
		return err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT sha256, length FROM chunks`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var sum []byte
		var n int64
		if err := rows.Scan(&sum, &n); err != nil {
			return err
		}
		if len(sum) == 32 {
			s.have[[32]byte(sum)] = uint32(n)
			s.used += n
		}
	}
	return rows.Err()
}

// Close closes the index.
func (s *Store) Close() error { return s.db.Close() }

func (s *Store) path(sum [32]byte) string {
	h := hex.EncodeToString(sum[:])
	return filepath.Join(s.dir, "chunks", h[:2], h)
}

// Have reports whether the store holds the chunk.
func (s *Store) Have(sum [32]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.have[sum]
	return ok
}

// Refs lists every chunk of a manifest, in file and chunk order.
func Refs(m *pb.BundleManifest) []ChunkRef {
	var out []ChunkRef
	for i, f := range m.GetFiles() {
		for j, c := range f.GetChunks() {
			if len(c.GetSha256()) != 32 {
				continue // Validate refuses such a manifest; never index out of range
			}
			out = append(out, ChunkRef{FileIndex: uint32(i), ChunkIndex: uint32(j),
				SHA256: [32]byte(c.GetSha256()), Length: c.GetLength()})
		}
	}
	return out
}

// Missing returns the chunks of m the store lacks, each hash once (its
// first place in the manifest), in file and chunk order.
func (s *Store) Missing(m *pb.BundleManifest) []ChunkRef {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[[32]byte]bool)
	var out []ChunkRef
	for _, r := range Refs(m) {
		if _, ok := s.have[r.SHA256]; ok || seen[r.SHA256] {
			continue
		}
		seen[r.SHA256] = true
		out = append(out, r)
	}
	return out
}

// Put verifies data against ref and stores it. Data of the wrong length or
// hash is refused with ErrMismatch and leaves nothing behind; a chunk
// already held is not written again. A chunk that would take the store
// over its quota is refused with ErrQuota, nothing written, unless a
// collection first makes room.
func (s *Store) Put(ctx context.Context, ref ChunkRef, data []byte) error {
	if len(data) != int(ref.Length) || sha256.Sum256(data) != ref.SHA256 {
		return fmt.Errorf("put chunk %d/%d (%x): %w", ref.FileIndex, ref.ChunkIndex, ref.SHA256[:6], ErrMismatch)
	}
	if s.Have(ref.SHA256) {
		return nil
	}
	if err := s.reserve(ctx, int64(ref.Length)); err != nil {
		return fmt.Errorf("put chunk %x: %w", ref.SHA256[:6], err)
	}
	defer s.unreserve(int64(ref.Length))
	s.gate.RLock()
	defer s.gate.RUnlock()
	final := s.path(ref.SHA256)
	if err := writeDurable(filepath.Join(s.dir, "tmp"), final, data); err != nil {
		return fmt.Errorf("put chunk %x: %w", ref.SHA256[:6], err)
	}
	if _, err := s.db.ExecContext(ctx, `INSERT OR REPLACE INTO chunks (sha256, length, stored_at_ms) VALUES (?, ?, ?)`,
		ref.SHA256[:], int64(ref.Length), time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("put chunk %x: index: %w", ref.SHA256[:6], err)
	}
	s.mu.Lock()
	if _, ok := s.have[ref.SHA256]; !ok {
		s.used += int64(ref.Length)
	}
	s.have[ref.SHA256] = ref.Length
	s.mu.Unlock()
	return nil
}

// Read returns a chunk's bytes, verified against its hash. A chunk damaged
// on disk is dropped from the index (so Missing asks for it again) and
// reported as ErrMismatch.
func (s *Store) Read(ctx context.Context, sum [32]byte) ([]byte, error) {
	if !s.Have(sum) {
		return nil, fmt.Errorf("chunk %x: %w", sum[:6], ErrNotFound)
	}
	data, err := os.ReadFile(s.path(sum))
	if err == nil && sha256.Sum256(data) == sum {
		return data, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("chunk %x: %w", sum[:6], err)
	}
	if ferr := s.forget(ctx, sum); ferr != nil {
		return nil, ferr
	}
	return nil, fmt.Errorf("chunk %x on disk is missing or damaged: %w", sum[:6], ErrMismatch)
}

func (s *Store) forget(ctx context.Context, sum [32]byte) error {
	s.gate.Lock()
	defer s.gate.Unlock()
	if _, err := s.db.ExecContext(ctx, `DELETE FROM chunks WHERE sha256 = ?`, sum[:]); err != nil {
		return fmt.Errorf("forget chunk %x: %w", sum[:6], err)
	}
	s.mu.Lock()
	s.used -= int64(s.have[sum])
	delete(s.have, sum)
	s.mu.Unlock()
	if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("forget chunk %x: %w", sum[:6], err)
	}
	return nil
}

// Dir returns the store's folder.
func (s *Store) Dir() string { return s.dir }

// Usage returns the bytes and count of the chunks held.
func (s *Store) Usage() (bytes int64, chunks int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used, len(s.have)
}

// Quota returns the store's byte quota.
func (s *Store) Quota() int64 { return s.opts.QuotaBytes }
