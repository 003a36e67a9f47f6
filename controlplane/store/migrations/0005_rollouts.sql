-- 0005: staged rollouts (controlplane/rollout): each rollout's spec and the
-- scheduler's state, one row per device the rollout touched, and an index
-- to read a rollout's audit trail.
--
-- rollouts.spec is the operator's spec as given (YAML or JSON), parsed
-- again on load; rollouts.state the scheduler's rollout-level state
-- (JSON) less the devices, which are rows of rollout_devices with their
-- phase as a column (to list by it) and their full state as JSON. version
-- grows with every save, so two replicas cannot both write a rollout from
-- the same read (optimistic concurrency).

CREATE TABLE rollouts (
	id         {{key}} NOT NULL PRIMARY KEY,
	name       TEXT NOT NULL DEFAULT '',
	model      {{key}} NOT NULL,
	release    BIGINT NOT NULL,
	spec       TEXT NOT NULL,
	phase      TEXT NOT NULL,
	stage      BIGINT NOT NULL DEFAULT 0,
	state      TEXT NOT NULL,
	version    BIGINT NOT NULL,
	created_by TEXT NOT NULL DEFAULT '',
	created_at BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);
CREATE INDEX rollouts_by_model ON rollouts (model, created_at);
CREATE INDEX rollouts_by_phase ON rollouts (phase, created_at);

CREATE TABLE rollout_devices (
	rollout_id   {{key}} NOT NULL REFERENCES rollouts (id),
	device_id    {{key}} NOT NULL,
	phase        TEXT NOT NULL,
	stage        BIGINT NOT NULL DEFAULT 0,
	from_release BIGINT NOT NULL DEFAULT 0,
	state        TEXT NOT NULL,
	updated_at   BIGINT NOT NULL,
	PRIMARY KEY (rollout_id, device_id)
);
CREATE INDEX rollout_devices_by_device ON rollout_devices (device_id);
CREATE INDEX rollout_devices_by_phase ON rollout_devices (rollout_id, phase);

CREATE INDEX audit_log_by_target ON audit_log (target, id);
