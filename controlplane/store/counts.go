package store

import (
	"context"
	"fmt"
)

// DeviceCounts counts the active (not decommissioned) devices, and those of
// them online. It is one aggregate query, cheap enough for every metrics
// scrape.
func (s *Store) DeviceCounts(ctx context.Context) (total, online int64, err error) {
	err = s.rdb.QueryRowContext(ctx, s.q(`SELECT COUNT(*), COALESCE(SUM(online), 0) FROM devices
		WHERE decommissioned_at = 0`)).Scan(&total, &online)
	if err != nil {
		return 0, 0, fmt.Errorf("count devices: %w", err)
	}
	return total, online, nil
}

// RolloutPhaseCounts counts the rollouts in each phase.
func (s *Store) RolloutPhaseCounts(ctx context.Context) (map[string]int64, error) {
	return s.phaseCounts(ctx, `SELECT phase, COUNT(*) FROM rollouts GROUP BY phase`)
}

// RolloutDevicePhaseCounts counts a rollout's devices in each phase.
func (s *Store) RolloutDevicePhaseCounts(ctx context.Context, rolloutID string) (map[string]int64, error) {
	return s.phaseCounts(ctx, `SELECT phase, COUNT(*) FROM rollout_devices WHERE rollout_id = ? GROUP BY phase`, rolloutID)
}

func (s *Store) phaseCounts(ctx context.Context, query string, args ...any) (map[string]int64, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("count by phase: %w", err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var (
			phase string
			n     int64
		)
		if err := rows.Scan(&phase, &n); err != nil {
			return nil, fmt.Errorf("count by phase: %w", err)
		}
		out[phase] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("count by phase: %w", err)
	}
	return out, nil
}
