-- models is the lifecycle of each model on the device: which A/B slot is
-- active, the rollback target while a new release is on probation, the
-- candidate being activated, and the release the device refused. Every
-- change of a row is one transaction together with its journal entry, so
-- the active pointer moves in one durable step.
CREATE TABLE models (
	name                TEXT    NOT NULL PRIMARY KEY,
	phase               TEXT    NOT NULL,            -- idle, staged, probation
	active_slot         TEXT    NOT NULL DEFAULT '', -- '', 'a', 'b'
	active_release      INTEGER NOT NULL DEFAULT 0,
	active_version      TEXT    NOT NULL DEFAULT '',
	active_digest       TEXT    NOT NULL DEFAULT '',
	active_manifest     BLOB,
	previous_slot       TEXT    NOT NULL DEFAULT '',
	previous_release    INTEGER NOT NULL DEFAULT 0,
	previous_version    TEXT    NOT NULL DEFAULT '',
	previous_digest     TEXT    NOT NULL DEFAULT '',
	previous_manifest   BLOB,
	candidate_slot      TEXT    NOT NULL DEFAULT '',
	candidate_release   INTEGER NOT NULL DEFAULT 0,
	candidate_version   TEXT    NOT NULL DEFAULT '',
	candidate_digest    TEXT    NOT NULL DEFAULT '',
	candidate_manifest  BLOB,
	probation_start_ms  INTEGER NOT NULL DEFAULT 0,
	attempts            INTEGER NOT NULL DEFAULT 0,
	rejected_digest     TEXT    NOT NULL DEFAULT '',
	rejected_release    INTEGER NOT NULL DEFAULT 0,
	rejected_reason     TEXT    NOT NULL DEFAULT '',
	health              TEXT    NOT NULL DEFAULT '',
	last_error          TEXT    NOT NULL DEFAULT '',
	rollbacks           INTEGER NOT NULL DEFAULT 0,
	updated_at_ms       INTEGER NOT NULL
);
