package chunkstore

// SetAfterIndexDelete sets the hook Collect runs between its committed
// index delete and its file removals (a crash there, for tests).
func SetAfterIndexDelete(s *Store, f func() error) { s.afterIndexDelete = f }
