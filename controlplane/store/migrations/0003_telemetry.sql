-- 0003: devices' window summaries (telemetry), their de-duplication ledger,
-- and hourly and daily rollups.
--
-- telemetry_received has one row per (device, epoch, sequence) ever
-- stored, so a message sent twice is stored once, whichever replica gets
-- it. telemetry_summaries holds each message's summaries, keyed so that a
-- device's are contiguous in sequence order. Rollups merge a device's
-- summaries of one model release per hour ('h') or day ('d'), by the
-- summary's start; telemetry_rollup_state is how far each granularity is
-- rolled up, and telemetry_rollup_dirty the buckets a late summary landed
-- in after their rollup was made.

CREATE TABLE telemetry_received (
	device_id   {{key}} NOT NULL,
	epoch       {{key}} NOT NULL,
	sequence    BIGINT NOT NULL,
	received_at BIGINT NOT NULL,
	PRIMARY KEY (device_id, epoch, sequence)
);
CREATE INDEX telemetry_received_by_time ON telemetry_received (received_at);

CREATE TABLE telemetry_summaries (
	device_id {{key}} NOT NULL,
	epoch     {{key}} NOT NULL,
	sequence  BIGINT NOT NULL,
	idx       BIGINT NOT NULL,  -- position within the message
	model     {{key}} NOT NULL,
	release   BIGINT NOT NULL,
	slot      TEXT NOT NULL DEFAULT '',
	start_ms  BIGINT NOT NULL,
	end_ms    BIGINT NOT NULL,
	requests  BIGINT NOT NULL DEFAULT 0,
	errors    BIGINT NOT NULL DEFAULT 0,
	payload   {{bytes}} NOT NULL, -- one flotilla.v1.WindowSummary
	PRIMARY KEY (device_id, epoch, sequence, idx)
);
CREATE INDEX telemetry_summaries_by_model ON telemetry_summaries (model, release, start_ms);
CREATE INDEX telemetry_summaries_by_start ON telemetry_summaries (start_ms);

CREATE TABLE telemetry_rollups (
	granularity  TEXT NOT NULL,   -- 'h' or 'd'
	device_id    {{key}} NOT NULL,
	model        {{key}} NOT NULL,
	release      BIGINT NOT NULL,
	bucket_start BIGINT NOT NULL,
	payload      {{bytes}} NOT NULL,
	PRIMARY KEY (granularity, model, release, bucket_start, device_id)
);

CREATE TABLE telemetry_rollup_state (
	granularity TEXT NOT NULL PRIMARY KEY,
	watermark   BIGINT NOT NULL   -- every bucket before it is rolled up
);

CREATE TABLE telemetry_rollup_dirty (
	granularity  TEXT NOT NULL,
	device_id    {{key}} NOT NULL,
	model        {{key}} NOT NULL,
	release      BIGINT NOT NULL,
	bucket_start BIGINT NOT NULL,
	PRIMARY KEY (granularity, device_id, model, release, bucket_start)
);
