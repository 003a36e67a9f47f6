-- 0009: each device's latest reported state, so a restarted control plane
-- knows what every device runs (the rollout scheduler judges by it) before
-- the device reports again.
--
-- payload is the device's flotilla.v1.ReportedState as it sent it;
-- desired_revision the desired revision that report answers, as a column
-- to read without decoding. One row per device, overwritten.

CREATE TABLE device_reports (
	device_id        {{key}} NOT NULL PRIMARY KEY,
	desired_revision BIGINT NOT NULL DEFAULT 0,
	received_at      BIGINT NOT NULL,
	payload          {{bytes}} NOT NULL
);
