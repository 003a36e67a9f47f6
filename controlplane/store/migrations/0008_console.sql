-- 0008: console users and their sessions.
--
-- console_users.password_hash is an argon2id hash in the PHC string form
-- ($argon2id$v=19$m=…,t=…,p=…$salt$hash); the password itself is never
-- stored. A disabled user keeps its row so the audit log keeps naming it.
-- console_sessions.secret_hash is the SHA-256 of the session cookie's
-- secret, so a copy of the database cannot be replayed as a session;
-- csrf is the session's form token, compared with what each form posts.

CREATE TABLE console_users (
	name          {{key}} NOT NULL PRIMARY KEY,
	role          TEXT NOT NULL,
	password_hash TEXT NOT NULL,
	created_at    BIGINT NOT NULL,
	disabled_at   BIGINT NOT NULL DEFAULT 0,
	last_login_at BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE console_sessions (
	secret_hash {{bytes}} NOT NULL PRIMARY KEY,
	user_name   {{key}} NOT NULL REFERENCES console_users (name),
	csrf        TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	expires_at  BIGINT NOT NULL
);
CREATE INDEX console_sessions_by_user ON console_sessions (user_name);
