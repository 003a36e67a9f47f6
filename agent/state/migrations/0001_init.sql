-- The agent's local state. One row tables hold what there is one of.
CREATE TABLE meta (
	key   TEXT NOT NULL PRIMARY KEY,
	value TEXT NOT NULL
);

-- identity is the device's enrolment: who it is and how it reaches the
-- broker. The private key is not here: it lives in device.key.
CREATE TABLE identity (
	id              INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	device_id       TEXT    NOT NULL,
	mqtt_url        TEXT    NOT NULL,
	mqtt_username   TEXT    NOT NULL,
	mqtt_password   TEXT    NOT NULL,
	topic_prefix    TEXT    NOT NULL,
	ca_pem          BLOB,
	certificate_pem BLOB,
	enrolled_at_ms  INTEGER NOT NULL
);

-- desired is the last desired state the agent accepted, as received.
CREATE TABLE desired (
	id             INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
	revision       INTEGER NOT NULL,
	raw            BLOB    NOT NULL,
	accepted_at_ms INTEGER NOT NULL
);

-- journal is a short history of notable events, newest kept.
CREATE TABLE journal (
	seq     INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
	at_ms   INTEGER NOT NULL,
	level   TEXT    NOT NULL,
	code    TEXT    NOT NULL,
	message TEXT    NOT NULL
);
