// Package diag is the agent's on-site diagnostics: a small versioned JSON
// protocol on a local unix socket (DataDir/diag.sock by default), the
// server the running agent answers it with, a client, the read-only view
// of the on-disk state for when the agent is not running, and the signed,
// redacted support bundle.
//
// The socket is the only way in: mode 0660 with group flotilla when that
// group exists, else 0600 (root or the agent's own user). It never needs
// the control plane, so it works on a device that lost its uplink.
//
// Protocol (version 1): the client connects, writes one Request as a JSON
// line (at most MaxRequest bytes), and reads one Response (JSON, at most
// MaxResponse bytes) until the server closes the connection.
//
//	→ {"v":1,"cmd":"status"}
//	← {"v":1,"ok":true,"data":{…StatusReport…}}
//
// Commands: status, models, test-infer (model), logs (level, contains,
// limit), resync, rollback (model, reason). A request with another
// version is refused with an error naming the versions served, so an old
// CLI and a new agent fail clearly, never half-understood.
package diag
