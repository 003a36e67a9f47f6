// Package metrics is the agent's inference record buffer and telemetry
// outbox.
//
//	Record (hot path: enqueue only, drop and count when full)
//	  → queue: chunks allocated as it fills, bounded (QueueSize records)
//	  → writer goroutine: batches of ≤ 1000 records per IMMEDIATE transaction
//	  → runs table (SQLite, WAL, synchronous NORMAL, own file): one row per
//	    run of ≤ 128 records of one model release and slot in one window
//	    (run.go), so a window takes whole rows
//	  → CloseWindows: per model, each window [start, start+W) becomes a
//	    WindowSummary (proto/summary) scored against the bundle's
//	    DriftBaseline; a window under the minimum record count is carried
//	    forward into the next (at most MaxCarry windows)
//	  → outbox table: one Telemetry message per row, sequence = row id,
//	    removed only when an application-level Ack names it
//	  → Drain: in order, at most MaxInFlight unacknowledged, resent after
//	    AckTimeout, paced by a message rate and, on metered links, a byte
//	    budget; over budget, unsent adjacent rows are merged (coarsened)
//	    rather than queued forever.
//
// The database has a quota (SQLite's max_page_count): over it, the oldest
// unsummarised records are evicted first, then unsent outbox rows are
// coarsened, then the oldest outbox rows evicted; every eviction is counted
// in Stats, never silent. A full disk or quota never blocks the hot path:
// records that cannot be written are counted as lost and serving goes on.
//
// The package knows nothing of MQTT: the agent wires Publish to its session
// and feeds acknowledgements to Ack.
package metrics
