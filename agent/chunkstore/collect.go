package chunkstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Hold marks m as the manifest of a download in progress: its chunks count
// as live for every collection until release is called (once is enough;
// more calls do nothing). Hold before asking Missing, so a chunk the
// download counts on is never collected under it.
func (s *Store) Hold(m *pb.BundleManifest) (release func()) {
	s.mu.Lock()
	s.nextHold++
	id := s.nextHold
	s.held[id] = m
	s.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.held, id)
			s.mu.Unlock()
		})
	}
}

// Collect removes every chunk that no manifest of live, no Held one and no
// Pinned one names, and returns how many chunks and bytes it freed. live
// must hold every manifest still in use: the active and staged slots'.
//
// The index rows go first, in one committed transaction, then the files:
// a crash in between leaves only files with no row, which Open removes.
func (s *Store) Collect(ctx context.Context, live []*pb.BundleManifest) (removed int, freed int64, err error) {
	s.gate.Lock()
	defer s.gate.Unlock()
	keep := make(map[[32]byte]bool)
	mark := func(m *pb.BundleManifest) {
		for _, r := range Refs(m) {
			keep[r.SHA256] = true
		}
	}
	for _, m := range live {
		mark(m)
	}

	s.mu.Lock()
	for _, m := range s.held {
		mark(m)
	}
	for _, m := range s.pins {
		mark(m)
	}
	var dead [][32]byte
	for sum, n := range s.have {
		if !keep[sum] {
			dead = append(dead, sum)
			freed += int64(n)
		}
	}
	if len(dead) == 0 {
		s.mu.Unlock()
		return 0, 0, nil
	}
	// s.mu stays held through the transaction, so no Hold or Missing
	// sees a chunk that is about to go as present.
	if err := s.deleteRows(ctx, dead); err != nil {
		s.mu.Unlock()
		return 0, 0, fmt.Errorf("collect: %w", err)
	}
	for _, sum := range dead {
		delete(s.have, sum)
	}
	s.used -= freed
	s.mu.Unlock()

	if s.afterIndexDelete != nil {
		if err := s.afterIndexDelete(); err != nil {
			return 0, 0, fmt.Errorf("collect: %w", err)
		}
	}
	for _, sum := range dead {
		if err := os.Remove(s.path(sum)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// The row is gone; the file is an orphan Open removes.
			return len(dead), freed, fmt.Errorf("collect: %w", err)
		}
	}
	return len(dead), freed, nil
}

// deleteRows deletes the index rows of sums in one transaction.
func (s *Store) deleteRows(ctx context.Context, sums [][32]byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `DELETE FROM chunks WHERE sha256 = ?`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, sum := range sums {
		if _, err := st.ExecContext(ctx, sum[:]); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// reserve makes room for n more bytes under the quota: at once if they
// fit, else after a collection with the live set Options.Live gives.
func (s *Store) reserve(ctx context.Context, n int64) error {
	if s.fits(n) {
		return nil
	}
	if s.opts.Live == nil {
		return s.overQuota(n, "no live set to collect against")
	}
	live, err := s.opts.Live()
	if err != nil {
		return s.overQuota(n, "live set unknown: "+err.Error())
	}
	if _, _, err := s.Collect(ctx, live); err != nil {
		return err
	}
	if s.fits(n) {
		return nil
	}
	return s.overQuota(n, "after collection")
}

// fits reserves n bytes if they fit under the quota.
func (s *Store) fits(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.used+s.reserved+n > s.opts.QuotaBytes {
		return false
	}
	s.reserved += n
	return true
}

func (s *Store) unreserve(n int64) {
	s.mu.Lock()
	s.reserved -= n
	s.mu.Unlock()
}

func (s *Store) overQuota(n int64, why string) error {
	s.mu.Lock()
	used := s.used + s.reserved
	s.mu.Unlock()
	return fmt.Errorf("%w: %d bytes held of %d, %d more do not fit (%s)", ErrQuota, used, s.opts.QuotaBytes, n, why)
}

// repair makes the index and the chunk files agree after a crash: a file
// the index does not name (a collection cut short, a torn write) is
// removed; a row whose file is gone or of the wrong size is dropped, so
// Missing asks for the chunk again.
func (s *Store) repair(ctx context.Context) error {
	root := filepath.Join(s.dir, "chunks")
	fans, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	seen := make(map[[32]byte]bool, len(s.have))
	for _, fan := range fans {
		p := filepath.Join(root, fan.Name())
		if !fan.IsDir() {
			if err := os.Remove(p); err != nil {
				return err
			}
			continue
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			return err
		}
		for _, e := range ents {
			sum, ok := parseSum(e.Name())
			if ok && e.Type().IsRegular() && fan.Name() == e.Name()[:2] {
				if n, held := s.have[sum]; held {
					if fi, err := e.Info(); err == nil && fi.Size() == int64(n) {
						seen[sum] = true
						continue
					}
				}
			}
			if err := os.RemoveAll(filepath.Join(p, e.Name())); err != nil {
				return err
			}
		}
	}
	var gone [][32]byte
	for sum := range s.have {
		if !seen[sum] {
			gone = append(gone, sum)
		}
	}
	if len(gone) == 0 {
		return nil
	}
	if err := s.deleteRows(ctx, gone); err != nil {
		return err
	}
	for _, sum := range gone {
		s.used -= int64(s.have[sum])
		delete(s.have, sum)
	}
	return nil
}

func parseSum(name string) ([32]byte, bool) {
	var sum [32]byte
	if len(name) != 64 {
		return sum, false
	}
	if _, err := hex.Decode(sum[:], []byte(name)); err != nil {
		return sum, false
	}
	return sum, hex.EncodeToString(sum[:]) == name // lower case only, as path writes it
}
