-- 0010: what replicas on one database must share besides the fleet's
-- rows: the uploaded bundles (on PostgreSQL; a single server on SQLite
-- keeps them in its data folder) and the release repository's signed
-- metadata. Both were files in each server's data folder (bundles/,
-- release/); a server imports its folder's copy once at start.
--
-- bundle_chunks: one row per chunk, named by the SHA-256 of data (at
-- most 256 KiB, flotillapb.MaxChunkSize); added_at is refreshed whenever
-- a manifest is stored that names it, so the collector of unreferenced
-- chunks (older than a grace period) never takes one a manifest being
-- stored needs. bundle_manifests: the manifest's bytes by digest (hex
-- SHA-256); bundle_manifest_chunks: which chunks each manifest names.

CREATE TABLE bundle_chunks (
	sha256   {{bytes}} NOT NULL PRIMARY KEY,
	size     BIGINT NOT NULL,
	added_at BIGINT NOT NULL,
	data     {{bytes}} NOT NULL
);
CREATE INDEX bundle_chunks_by_added ON bundle_chunks (added_at);

CREATE TABLE bundle_manifests (
	digest   {{key}} NOT NULL PRIMARY KEY,
	added_at BIGINT NOT NULL,
	raw      {{bytes}} NOT NULL
);

CREATE TABLE bundle_manifest_chunks (
	digest {{key}} NOT NULL,
	sha256 {{bytes}} NOT NULL,
	PRIMARY KEY (digest, sha256)
);
CREATE INDEX bundle_manifest_chunks_by_chunk ON bundle_manifest_chunks (sha256);

-- release_repos: one row per TUF repository ("release", "director"),
-- whose generation every write raises; a writer names the generation it
-- read, so two replicas never both publish on the same base.
-- release_files: the repository's signed files by name (N.root.json,
-- targets.json, snapshot.json and the time-stamp role's) with the version each
-- carries; a file is replaced only by a higher version.
CREATE TABLE release_repos (
	repo       {{key}} NOT NULL PRIMARY KEY,
	generation BIGINT NOT NULL,
	updated_at BIGINT NOT NULL
);

CREATE TABLE release_files (
	repo    {{key}} NOT NULL,
	name    {{key}} NOT NULL,
	version BIGINT NOT NULL,
	data    {{bytes}} NOT NULL,
	PRIMARY KEY (repo, name)
);
