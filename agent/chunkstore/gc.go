package chunkstore

import (
	"context"
	"fmt"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// GC removes every chunk that none of keep references and returns how many
// chunks and bytes it freed. keep must hold every manifest still in use:
// the active and inactive slots' and any being fetched or unpacked.
func (s *Store) GC(ctx context.Context, keep ...*pb.BundleManifest) (int, int64, error) {
	live := make(map[[32]byte]bool)
	for _, m := range keep {
		for _, r := range Refs(m) {
			live[r.SHA256] = true
		}
	}
	s.mu.Lock()
	var dead [][32]byte
	var freed int64
	for sum, n := range s.have {
		if !live[sum] {
			dead = append(dead, sum)
			freed += int64(n)
		}
	}
	s.mu.Unlock()
	for _, sum := range dead {
		if err := s.forget(ctx, sum); err != nil {
			return 0, 0, fmt.Errorf("gc: %w", err)
		}
	}
	return len(dead), freed, nil
}
