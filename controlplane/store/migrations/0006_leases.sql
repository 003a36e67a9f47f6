-- 0006: leadership of singleton jobs (the rollout scheduler) across
-- control-plane replicas. The lock itself is PostgreSQL's session advisory
-- lock (store/lease.go); this table holds each job's epoch, raised by every
-- new leader and checked, under a row lock, by every write the leader makes
-- (a fencing token): a leader that stalled and lost its lock cannot write
-- after its successor started.

CREATE TABLE leases (
	name       {{key}} NOT NULL PRIMARY KEY,
	epoch      BIGINT NOT NULL,
	holder     TEXT NOT NULL DEFAULT '',
	started_at BIGINT NOT NULL DEFAULT 0
);
