package server

import "context"

// AssignedRelease is the release of model the server has assigned to
// device (0: none), as its delivery keeps it.
func (s *Server) AssignedRelease(device, model string) uint64 {
	a, _, _ := s.delivery.assigned.get(context.Background(), device, model)
	return a.Release
}

// SchedulerLeading says whether this server holds the rollout
// scheduler's lease.
func (s *Server) SchedulerLeading() bool { return s.rollouts.leading.Load() != 0 }
