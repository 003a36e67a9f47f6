-- 0007: which release of each model every device is assigned, and when
-- the director last signed it into the device's desired state. It was a
-- JSON file in the data folder (release/assignments.json, imported once
-- at start); in the database, replicas share it and an assignment writes
-- one row, not the whole fleet's file.

CREATE TABLE assignments (
	device_id {{key}} NOT NULL,
	model     {{key}} NOT NULL,
	release   BIGINT NOT NULL,
	target    TEXT NOT NULL,
	digest    {{key}} NOT NULL,
	revision  BIGINT NOT NULL DEFAULT 0, -- the desired state last signed with it
	signed_at BIGINT NOT NULL DEFAULT 0, -- when, ms; 0: not yet
	PRIMARY KEY (device_id, model)
);
CREATE INDEX assignments_by_digest ON assignments (digest, device_id);
CREATE INDEX assignments_by_signed ON assignments (signed_at);
