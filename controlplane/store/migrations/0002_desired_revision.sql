-- 0002: the revision of each device's desired state, so it only ever grows,
-- across control-plane restarts and replicas.
ALTER TABLE devices ADD COLUMN desired_revision BIGINT NOT NULL DEFAULT 0;
