package server

// AssignedRelease is the release of model the server has assigned to
// device (0: none), as its delivery keeps it.
func (s *Server) AssignedRelease(device, model string) uint64 {
	a, _ := s.delivery.assigned.get(device, model)
	return a.Release
}
