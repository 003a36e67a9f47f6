package telemetry

// Backlog is the number of messages waiting for a store transaction, and
// the queue's capacity: a message that finds it full is dropped
// unacknowledged (Counters.Overloaded) and the device sends it again.
func (in *Ingest) Backlog() (waiting, capacity int) { return len(in.queue), cap(in.queue) }
