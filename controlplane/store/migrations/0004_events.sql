-- 0004: device events (errors, rollbacks, restarts) carried by Telemetry
-- messages whose payload is Events; and two columns that close a race
-- between the rollup job and the ingest (see the end).
--
-- Events They share the de-duplication ledger
-- telemetry_received with summaries: a message's (device, epoch, sequence)
-- is stored once, whatever it carries. idx is the event's position within
-- its message; attrs is a JSON object of strings.

CREATE TABLE device_events (
	device_id   {{key}} NOT NULL,
	epoch       {{key}} NOT NULL,
	sequence    BIGINT NOT NULL,
	idx         BIGINT NOT NULL,
	at_ms       BIGINT NOT NULL,   -- the device's clock
	received_at BIGINT NOT NULL,   -- the control plane's clock; retention goes by it
	level       TEXT NOT NULL,
	code        TEXT NOT NULL,
	message     TEXT NOT NULL DEFAULT '',
	attrs       TEXT NOT NULL DEFAULT '{}',
	PRIMARY KEY (device_id, epoch, sequence, idx)
);
CREATE INDEX device_events_by_time ON device_events (device_id, at_ms);
CREATE INDEX device_events_by_received ON device_events (received_at);

-- The rollup job claims the buckets it is about to roll up (claimed) before
-- it reads them, so a summary stored while it runs marks its bucket dirty
-- rather than being left out; a dirty bucket counts the summaries that
-- marked it (marks), so the job clears only a mark whose count it read
-- before recomputing, and a summary arriving meanwhile keeps it dirty.
ALTER TABLE telemetry_rollup_state ADD COLUMN claimed BIGINT NOT NULL DEFAULT 0;
ALTER TABLE telemetry_rollup_dirty ADD COLUMN marks BIGINT NOT NULL DEFAULT 1;
