-- 0011: support-bundle uploads in the database rather than one replica's
-- data folder, so that replicas sharing the device topics (an MQTT shared
-- subscription deals an upload's chunks to any of them) take its chunks in
-- turn and any of them serves the finished bundle.
--
-- support_uploads is one upload's state (controlplane/supportbundle's
-- Info): next is the index of the chunk it expects, read and advanced under
-- a row lock with the chunk's insert. signature is the device's detached
-- signature, from the last chunk on. Times are milliseconds since the epoch.
-- support_chunks holds the chunks taken, by index: the bundle is their
-- concatenation, kept as it is once verified (state 'ready').

CREATE TABLE support_uploads (
	device_id    {{key}} NOT NULL,
	id           {{key}} NOT NULL,
	state        TEXT NOT NULL,
	error        TEXT NOT NULL DEFAULT '',
	requested_by TEXT NOT NULL DEFAULT '',
	requested_at BIGINT NOT NULL,
	updated_at   BIGINT NOT NULL,
	size         BIGINT NOT NULL DEFAULT 0,
	received     BIGINT NOT NULL DEFAULT 0,
	sha256       TEXT NOT NULL DEFAULT '',
	chunks       BIGINT NOT NULL DEFAULT 0,
	next         BIGINT NOT NULL DEFAULT 0,
	chunk_size   BIGINT NOT NULL DEFAULT 0,
	verified     TEXT NOT NULL DEFAULT '',
	signature    {{bytes}},
	PRIMARY KEY (device_id, id)
);

CREATE INDEX support_uploads_state ON support_uploads (state, updated_at);

CREATE TABLE support_chunks (
	device_id {{key}} NOT NULL,
	upload_id {{key}} NOT NULL,
	idx       BIGINT NOT NULL,
	data      {{bytes}} NOT NULL,
	PRIMARY KEY (device_id, upload_id, idx)
);
