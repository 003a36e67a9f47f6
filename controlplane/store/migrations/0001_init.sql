-- 0001: devices, their labels, enrolment and API tokens, the audit log.
--
-- Portable SQL only: {{bytes}}, {{key}} and {{serial_pk}} are expanded per
-- dialect (see dialect.go). Times are BIGINT milliseconds since the epoch,
-- 0 meaning "never"; booleans are INTEGER 0/1; label maps are JSON text.

CREATE TABLE devices (
	id                {{key}} NOT NULL PRIMARY KEY,
	public_key        {{bytes}} NOT NULL,
	credential_hash   {{bytes}},               -- NULL once decommissioned
	labels            TEXT NOT NULL DEFAULT '{}',
	labels_changed_at BIGINT NOT NULL DEFAULT 0,
	facts             {{bytes}},
	birth_at          BIGINT NOT NULL DEFAULT 0, -- time of the newest birth applied
	agent_version     TEXT NOT NULL DEFAULT '',
	protocol_version  BIGINT NOT NULL DEFAULT 0,
	enrolled_at       BIGINT NOT NULL,
	last_seen         BIGINT NOT NULL DEFAULT 0,
	status_changed_at BIGINT NOT NULL DEFAULT 0,
	online            INTEGER NOT NULL DEFAULT 0,
	decommissioned_at BIGINT NOT NULL DEFAULT 0,
	enrol_token_id    {{key}} NOT NULL DEFAULT '',
	cert_serial       TEXT NOT NULL DEFAULT ''
);

-- One row per device label, kept in step with devices.labels in the same
-- transaction, so that selectors are indexed lookups in every dialect.
CREATE TABLE device_labels (
	device_id   {{key}} NOT NULL REFERENCES devices (id),
	label_key   TEXT NOT NULL,
	label_value TEXT NOT NULL,
	PRIMARY KEY (device_id, label_key)
);
CREATE INDEX device_labels_by_label ON device_labels (label_key, label_value, device_id);

CREATE TABLE enrol_tokens (
	id         {{key}} NOT NULL PRIMARY KEY,
	hash       {{bytes}} NOT NULL UNIQUE,
	name       TEXT NOT NULL DEFAULT '',
	max_uses   BIGINT NOT NULL DEFAULT 0,      -- 0: unlimited
	uses       BIGINT NOT NULL DEFAULT 0,
	expires_at BIGINT NOT NULL DEFAULT 0,
	labels     TEXT NOT NULL DEFAULT '{}',
	created_at BIGINT NOT NULL,
	revoked_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
	id           {{key}} NOT NULL PRIMARY KEY,
	name         TEXT NOT NULL DEFAULT '',
	role         TEXT NOT NULL,
	hash         {{bytes}} NOT NULL UNIQUE,
	created_at   BIGINT NOT NULL,
	expires_at   BIGINT NOT NULL DEFAULT 0,
	revoked_at   BIGINT NOT NULL DEFAULT 0,
	last_used_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE audit_log (
	id     {{serial_pk}},
	at     BIGINT NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
